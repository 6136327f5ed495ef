"""Batch-norm-folded LAS blocks and the two PyTorch reference executions used to check every kernel.

* :func:`dense_masked_block`: everything computed densely, output multiplied by the mask (official semantics).
  :func:`static_block` is the same block without a mask (every patch active): the static baseline.
* :func:`sparse_block`: dense conv1, explicit gather of the active patches with their halo, conv2 / SE / conv3
  on the patches only, scatter-add into the identity. This is also the "dynamic network in plain PyTorch"
  baseline of the benchmarks.

Patch ``p`` of the coarse grid (``g = ceil(H_out / S)`` per side) is ``(p // g, p % g)`` and covers output
rows ``[i*S, i*S + S)`` clipped to ``H_out`` (see :mod:`lasnet_tvm.archs`). Its 3x3 conv reads conv1 rows
``[i*S*stride - 1, i*S*stride - 1 + L)`` with ``L = (S - 1) * stride + 3``, zero outside the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..archs import BlockSpec
from .blocks import LASBlock
from .masker import patch_pool, upsample_mask


@dataclass
class FoldedBlock:
    """Weights of one LAS block with batch norm folded in (float32, eval mode).

    Attributes
    ----------
    w1, b1 : ``[C_mid, C_in]``, ``[C_mid]`` conv1 (ReLU after).
    wm, bm : ``[C_in]``, ``[]`` masker logit difference (channel 0 minus channel 1); active where >= 0.
    w2, b2 : ``[C_mid, C_mid // groups, 3, 3]``, ``[C_mid]`` conv2 (stride, groups; ReLU after).
    se : ``(fc1_w [R, C_mid], fc1_b [R], fc2_w [C_mid, R], fc2_b [C_mid])`` or None.
    w3, b3 : ``[C_out, C_mid]``, ``[C_out]`` conv3 (no activation).
    wd, bd : ``[C_out, C_in]``, ``[C_out]`` downsample 1x1 conv with stride, or None.
    """

    spec: BlockSpec
    w1: torch.Tensor
    b1: torch.Tensor
    wm: torch.Tensor
    bm: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor
    w3: torch.Tensor
    b3: torch.Tensor
    wd: torch.Tensor | None = None
    bd: torch.Tensor | None = None
    se: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None


def fold_conv_bn(conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BN into the preceding bias-free conv: returns ``(weight, bias)``."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    w = conv.weight * scale.reshape(-1, 1, 1, 1)
    b = bn.bias - bn.running_mean * scale
    return w.detach().float(), b.detach().float()


@torch.no_grad()
def fold_block(block: LASBlock) -> FoldedBlock:
    """Fold a :class:`~lasnet_tvm.models.blocks.LASBlock` into a :class:`FoldedBlock`."""
    w1, b1 = fold_conv_bn(block.conv1, block.bn1)
    w2, b2 = fold_conv_bn(block.conv2, block.bn2)
    w3, b3 = fold_conv_bn(block.conv3, block.bn3)
    mw, mb = block.masker.conv2.weight.detach().float(), block.masker.conv2.bias.detach().float()
    fb = FoldedBlock(
        block.spec, w1.flatten(1), b1, (mw[0] - mw[1]).flatten(), mb[0] - mb[1], w2, b2, w3.flatten(1), b3
    )
    if block.down_conv is not None:
        wd, fb.bd = fold_conv_bn(block.down_conv, block.down_bn)
        fb.wd = wd.flatten(1)
    if block.se is not None:
        se = block.se
        fb.se = tuple(t.detach().float() for t in (se.fc1.weight.flatten(1), se.fc1.bias, se.fc2.weight.flatten(1), se.fc2.bias))
    return fb


def _conv1x1(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, stride: int = 1) -> torch.Tensor:
    return F.conv2d(x, w[:, :, None, None], b, stride=stride)


def coarse_mask(fb: FoldedBlock, x: torch.Tensor) -> torch.Tensor:
    """Boolean coarse mask ``[B, g, g]``: pooled masker logit difference >= 0."""
    s = fb.spec
    pooled = patch_pool(x, s.S * s.stride)
    diff = torch.einsum("bchw,c->bhw", pooled, fb.wm) + fb.bm
    return diff >= 0


def active_indices(mask: torch.Tensor) -> torch.Tensor:
    """Row-major indices (int32) of the active patches of one coarse mask ``[g, g]``."""
    return torch.nonzero(mask.flatten(), as_tuple=False).flatten().to(torch.int32)


def identity_branch(fb: FoldedBlock, x: torch.Tensor) -> torch.Tensor:
    return x if fb.wd is None else _conv1x1(x, fb.wd, fb.bd, fb.spec.stride)


def _se_scale(fb: FoldedBlock, pooled: torch.Tensor) -> torch.Tensor:
    w1, b1, w2, b2 = fb.se
    return torch.sigmoid(F.linear(F.relu(F.linear(pooled, w1, b1)), w2, b2))


def dense_masked_block(fb: FoldedBlock, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reference (a): the block computed densely, conv3's output multiplied by the mask ``[B, g, g]``."""
    s = fb.spec
    m = upsample_mask(mask[:, None].to(x.dtype), s.S, s.out_size)
    out = F.relu(_conv1x1(x, fb.w1, fb.b1))
    out = F.relu(F.conv2d(out, fb.w2, fb.b2, stride=s.stride, padding=1, groups=s.groups))
    if fb.se is not None:
        pooled = (out * m).sum(dim=(2, 3)) / m.sum(dim=(2, 3)).clamp(min=1.0)
        out = out * _se_scale(fb, pooled)[:, :, None, None]
    out = _conv1x1(out, fb.w3, fb.b3) * m
    return F.relu(out + identity_branch(fb, x))


def static_block(fb: FoldedBlock, x: torch.Tensor) -> torch.Tensor:
    """The block with every patch active, computed densely without a mask: the static network's block (SE
    included), equal to :func:`dense_masked_block` under an all-ones mask. Input ``[B, C, H, W]``."""
    s = fb.spec
    out = F.relu(_conv1x1(x, fb.w1, fb.b1))
    out = F.relu(F.conv2d(out, fb.w2, fb.b2, stride=s.stride, padding=1, groups=s.groups))
    if fb.se is not None:
        out = out * _se_scale(fb, out.mean(dim=(2, 3)))[:, :, None, None]
    return F.relu(_conv1x1(out, fb.w3, fb.b3) + identity_branch(fb, x))


def patch_windows(spec: BlockSpec, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices ``[P, L]`` (in conv1 coordinates padded by 1 on top/left) of each patch's window."""
    g, S, st = spec.grid, spec.S, spec.stride
    L = (S - 1) * st + 3
    idx = idx.long()
    offs = torch.arange(L, device=idx.device)
    rows = (idx // g)[:, None] * S * st + offs
    cols = (idx % g)[:, None] * S * st + offs
    return rows, cols


def gather_patches(spec: BlockSpec, feat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather ``[P, C, L, L]`` windows (patch plus halo, zero outside the image) from ``feat`` ``[C, H, W]``."""
    S, st, H = spec.S, spec.stride, feat.shape[-1]
    need = (spec.grid * S - 1) * st + 3  # padded extent the last window reaches
    padded = F.pad(feat, (1, need - H - 1, 1, need - H - 1))
    rows, cols = patch_windows(spec, idx)
    win = padded[:, rows[:, :, None], cols[:, None, :]]  # [C, P, L, L]
    return win.permute(1, 0, 2, 3)


def valid_patch_pixels(spec: BlockSpec, idx: torch.Tensor) -> torch.Tensor:
    """``[P, S, S]`` bool: which pixels of each patch lie inside the output (edge patches are clipped)."""
    g, S = spec.grid, spec.S
    offs = torch.arange(S, device=idx.device)
    r = (idx.long() // g)[:, None] * S + offs
    c = (idx.long() % g)[:, None] * S + offs
    return (r < spec.out_size)[:, :, None] & (c < spec.out_size)[:, None, :]


def scatter_add_relu(spec: BlockSpec, identity: torch.Tensor, patches: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``relu(identity + patch)`` on active patches, ``relu(identity)`` elsewhere; ``identity`` is ``[C, H, W]``."""
    g, S, H = spec.grid, spec.S, spec.out_size
    canvas = identity.new_zeros(identity.shape[0], g * S, g * S)
    canvas[:, :H, :H] = identity
    offs = torch.arange(S, device=idx.device)
    rows = (idx.long() // g)[:, None] * S + offs
    cols = (idx.long() % g)[:, None] * S + offs
    canvas[:, rows[:, :, None], cols[:, None, :]] += patches.permute(1, 0, 2, 3)
    return F.relu(canvas[:, :H, :H])


def sparse_block(fb: FoldedBlock, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference (b): gather / conv on active patches / scatter-add. Returns ``(out, mask [B, g, g])``.

    ``mask`` defaults to the block's own masker decision on ``x``.
    """
    s = fb.spec
    if mask is None:
        mask = coarse_mask(fb, x)
    identity = identity_branch(fb, x)
    outs = []
    for n in range(x.shape[0]):
        idx = active_indices(mask[n])
        if idx.numel() == 0:
            outs.append(F.relu(identity[n]))
            continue
        f1 = F.relu(_conv1x1(x[n : n + 1], fb.w1, fb.b1))[0]
        patches = F.relu(F.conv2d(gather_patches(s, f1, idx), fb.w2, fb.b2, stride=s.stride, groups=s.groups))
        if fb.se is not None:
            valid = valid_patch_pixels(s, idx)[:, None].to(patches.dtype)
            pooled = (patches * valid).sum(dim=(0, 2, 3)) / valid.sum().clamp(min=1.0)
            patches = patches * _se_scale(fb, pooled[None])[0][None, :, None, None]
        patches = _conv1x1(patches, fb.w3, fb.b3)
        outs.append(scatter_add_relu(s, identity[n], patches, idx))
    return torch.stack(outs), mask
