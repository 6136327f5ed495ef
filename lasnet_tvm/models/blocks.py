"""LAS bottleneck blocks with the official LASNet parameter layouts (ResNet and RegNetY).

Both blocks share one forward (:meth:`LASBlock.forward`): masker on the block input, dense conv1-conv2-(SE)-conv3
multiplied by the upsampled mask, plus the (dense) identity or downsample branch, then ReLU. Pixels outside
the mask therefore equal ``relu(identity)``, as in the official code.

Squeeze-excitation (RegNetY)
----------------------------
The official code pools SE over the dense conv2 output, which a sparse kernel never computes. With
``se_pool="active"`` (our default) SE averages conv2's output over the *active* output pixels only (any value
when none is active: the block's output is then ``relu(identity)`` regardless). Training and inference use the
same rule, so the sparse kernels execute it exactly. ``se_pool="dense"`` reproduces the official model and is
what a converted official RegNetY checkpoint uses until it is fine-tuned with ``active`` pooling; at r = 1 the
two agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..archs import BlockSpec
from .masker import Masker, dilate_mask, upsample_mask

SE_POOLS = ("active", "dense")


class SqueezeExcitation(nn.Module):
    """torchvision-compatible SE (``fc1``, ``fc2`` as 1x1 convs), pooled over the active pixels of a mask."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            pooled = x.mean(dim=(2, 3), keepdim=True)
        else:
            pooled = (x * mask).sum(dim=(2, 3), keepdim=True) / mask.sum(dim=(2, 3), keepdim=True).clamp(min=1.0)
        scale = torch.sigmoid(self.fc2(F.relu(self.fc1(pooled))))
        return x * scale


class LASBlock(nn.Module):
    """Base of the LAS bottleneck blocks; subclasses only name the layers as the official code does.

    Subclasses provide ``conv1, bn1, conv2, bn2, conv3, bn3`` (modules), ``se`` (or None), ``down_conv`` and
    ``down_bn`` (or None) through properties.
    """

    spec: BlockSpec

    def _init_common(self, spec: BlockSpec, bias0: float, se_pool: str) -> None:
        if se_pool not in SE_POOLS:
            raise ValueError(f"se_pool must be one of {SE_POOLS}, got {se_pool!r}")
        self.spec = spec
        self.se_pool = se_pool
        self.static = False
        self.masker = Masker(spec.c_in, spec.S * spec.stride, bias0=bias0)

    # -- flops ---------------------------------------------------------------------------------------------
    def static_flops(self) -> float:
        """Multiply-accumulates of the static block (no masker), per sample."""
        s = self.spec
        hw_in, hw = s.in_size**2, s.out_size**2
        f = s.c_in * s.c_mid * hw_in + s.c_mid * s.c_mid * 9 // s.groups * hw + s.c_mid * s.c_out * hw
        if s.se_channels:
            f += s.c_mid * hw + 2 * s.c_mid * s.se_channels
        if s.downsample:
            f += s.c_in * s.c_out * hw
        return float(f)

    def masker_flops(self) -> float:
        s = self.spec
        return float(s.c_in * s.in_size**2 + (2 * s.c_in + 2) * s.grid**2)

    def dynamic_flops(self, rate: torch.Tensor, rate_dil: torch.Tensor) -> torch.Tensor:
        """MACs executed for per-sample activation rates (conv1 on the dilated mask, as the official code)."""
        s = self.spec
        hw_in, hw = s.in_size**2, s.out_size**2
        f = self.masker_flops() + s.c_in * s.c_mid * hw_in * rate_dil
        f = f + (s.c_mid * s.c_mid * 9 // s.groups + s.c_mid * s.c_out) * hw * rate
        if s.se_channels:
            f = f + s.c_mid * hw * rate + 2 * s.c_mid * s.se_channels
        if s.downsample:
            f = f + s.c_in * s.c_out * hw
        return f

    # -- forward -------------------------------------------------------------------------------------------
    def identity(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.down_conv is None else self.down_bn(self.down_conv(x))

    def forward(self, x: torch.Tensor, temperature: float = 1.0):
        """Returns ``(out, coarse_mask)``; ``coarse_mask`` is None for the static block."""
        s = self.spec
        mask_c = None if self.static else self.masker(x, temperature)
        mask = None if mask_c is None else upsample_mask(mask_c, s.S, s.out_size)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        if self.se is not None:
            out = self.se(out, mask if self.se_pool == "active" else None)
        out = self.bn3(self.conv3(out))
        if mask is not None:
            out = out * mask
        return F.relu(out + self.identity(x)), mask_c

    def block_stats(self, mask_c: torch.Tensor):
        """Per-sample activation rate, dilated rate (input pixels of conv1) and dynamic MACs."""
        s = self.spec
        mask = upsample_mask(mask_c, s.S, s.out_size)
        rate = mask.mean(dim=(1, 2, 3))
        dil = dilate_mask(mask, s.stride)[:, :, : s.in_size, : s.in_size]
        rate_dil = dil.mean(dim=(1, 2, 3))
        return rate, rate_dil, self.dynamic_flops(rate, rate_dil)


def _conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    return nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)


class ResNetLASBlock(LASBlock):
    """torchvision/official ``Bottleneck`` layout: conv1, bn1, conv2, bn2, conv3, bn3, downsample.{0,1}."""

    def __init__(self, spec: BlockSpec, se_pool: str = "active"):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(spec.c_in, spec.c_mid)
        self.conv2, self.bn2 = _conv_bn(spec.c_mid, spec.c_mid, 3, spec.stride, spec.groups)
        self.conv3, self.bn3 = _conv_bn(spec.c_mid, spec.c_out)
        self.downsample = nn.Sequential(*_conv_bn(spec.c_in, spec.c_out, 1, spec.stride)) if spec.downsample else None
        self.se = None
        self._init_common(spec, bias0=5.0, se_pool=se_pool)

    @property
    def down_conv(self):
        return None if self.downsample is None else self.downsample[0]

    @property
    def down_bn(self):
        return None if self.downsample is None else self.downsample[1]


class _ConvNormAct(nn.Sequential):
    """torchvision ``Conv2dNormActivation`` layout (``0`` conv, ``1`` BN); activation applied by the block."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1):
        super().__init__(*_conv_bn(cin, cout, k, stride, groups))


class _RegNetTransform(nn.Module):
    def __init__(self, spec: BlockSpec):
        super().__init__()
        self.a = _ConvNormAct(spec.c_in, spec.c_mid)
        self.b = _ConvNormAct(spec.c_mid, spec.c_mid, 3, spec.stride, spec.groups)
        self.se = SqueezeExcitation(spec.c_mid, spec.se_channels) if spec.se_channels else None
        self.c = _ConvNormAct(spec.c_mid, spec.c_out)


class RegNetLASBlock(LASBlock):
    """torchvision/official ``ResBottleneckBlock`` layout: proj.{0,1}, f.a, f.b, f.se.fc{1,2}, f.c."""

    def __init__(self, spec: BlockSpec, se_pool: str = "active"):
        super().__init__()
        self.proj = _ConvNormAct(spec.c_in, spec.c_out, 1, spec.stride) if spec.downsample else None
        self.f = _RegNetTransform(spec)
        self._init_common(spec, bias0=10.0, se_pool=se_pool)

    conv1 = property(lambda self: self.f.a[0])
    bn1 = property(lambda self: self.f.a[1])
    conv2 = property(lambda self: self.f.b[0])
    bn2 = property(lambda self: self.f.b[1])
    conv3 = property(lambda self: self.f.c[0])
    bn3 = property(lambda self: self.f.c[1])
    se = property(lambda self: self.f.se)
    down_conv = property(lambda self: None if self.proj is None else self.proj[0])
    down_bn = property(lambda self: None if self.proj is None else self.proj[1])
