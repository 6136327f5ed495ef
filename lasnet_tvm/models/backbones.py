"""LAS-ResNet and LAS-RegNetY backbones (official LASNet state_dict layouts)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..archs import ArchSpec
from .blocks import LASBlock, RegNetLASBlock, ResNetLASBlock, _ConvNormAct


class LASNet(nn.Module):
    """A LAS backbone built from an :class:`~lasnet_tvm.archs.ArchSpec`.

    ``forward(x)`` returns logits. ``forward(x, return_stats=True)`` returns ``(logits, stats)`` with, per
    sample, ``rates`` ``[B, n_blocks]`` (activation rate of each block), ``rates_dil`` (conv1's input rate),
    ``block_flops`` ``[B, n_blocks]`` (dynamic MACs per block), ``flops`` ``[B]`` (dynamic MACs of the whole
    network) and ``masks`` (a tuple of coarse masks ``[B, 1, g, g]``). Both forms export with
    ``torch.export``. A static model (``static=True``) skips the maskers; its stats report rate 1.
    """

    def __init__(self, spec: ArchSpec, se_pool: str = "active", static: bool = False):
        super().__init__()
        self.spec = spec
        self.se_pool = se_pool
        self._build_stem()
        self._build_stages()
        self.fc = nn.Linear(spec.feature_channels, spec.num_classes)
        self._init_weights()
        self.set_static(static)

    # -- construction --------------------------------------------------------------------------------------
    def _build_stem(self) -> None:
        c = self.spec.stem_channels
        if self.spec.family == "resnet":
            self.conv1 = nn.Conv2d(3, c, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(c)
        else:
            self.stem = _ConvNormAct(3, c, 3, 2)

    def _build_stages(self) -> None:
        if self.spec.family == "resnet":
            for stage in range(1, 5):
                blocks = [ResNetLASBlock(b, self.se_pool) for b in self.spec.blocks if b.stage == stage]
                setattr(self, f"layer{stage}", nn.ModuleList(blocks))
        else:
            self.trunk_output = nn.Module()
            for stage in range(1, 5):
                st = nn.Module()
                for b in self.spec.blocks:
                    if b.stage == stage:
                        st.add_module(f"block{stage}-{b.index}", RegNetLASBlock(b, self.se_pool))
                self.trunk_output.add_module(f"block{stage}", st)

    def _init_weights(self) -> None:
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d) and "masker" not in name:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # -- structure -----------------------------------------------------------------------------------------
    @property
    def blocks(self) -> list[LASBlock]:
        return [m for m in self.modules() if isinstance(m, LASBlock)]

    @property
    def static(self) -> bool:
        return self._static

    def set_static(self, static: bool) -> "LASNet":
        """Switch the maskers off (static counterpart) or on; weights are unchanged."""
        self._static = static
        for b in self.blocks:
            b.static = static
        return self

    def static_counterpart(self) -> "LASNet":
        """A deep copy with the maskers switched off: the static baseline and distillation teacher."""
        return copy.deepcopy(self).set_static(True)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        if self.spec.family == "resnet":
            return F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        return F.relu(self.stem(x))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    # -- flops ---------------------------------------------------------------------------------------------
    def _outer_flops(self) -> float:
        s = self.spec
        half = -(-s.input_size // 2)
        if s.family == "resnet":
            f = 3 * s.stem_channels * 49 * half**2 + s.stem_channels * 9 * s.blocks[0].in_size**2
        else:
            f = 3 * s.stem_channels * 9 * half**2
        last = s.blocks[-1]
        return float(f + last.c_out * last.out_size**2 + last.c_out * s.num_classes)

    def static_flops(self) -> float:
        """MACs of the static network per sample."""
        return self._outer_flops() + sum(b.static_flops() for b in self.blocks)

    # -- forward -------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, temperature: float = 1.0, return_stats: bool = False):
        x = self.forward_stem(x)
        masks, rates, rates_dil, flops = [], [], [], []
        for block in self.blocks:
            x, mask_c = block(x, temperature)
            if return_stats:
                if mask_c is None:
                    mask_c = x.new_ones(x.shape[0], 1, block.spec.grid, block.spec.grid)
                r, rd, f = block.block_stats(mask_c)
                if block.static:
                    f = torch.full_like(r, block.static_flops())
                masks.append(mask_c)
                rates.append(r)
                rates_dil.append(rd)
                flops.append(f)
        logits = self.head(x)
        if not return_stats:
            return logits
        block_flops = torch.stack(flops, dim=1)
        stats = {
            "masks": tuple(masks),
            "rates": torch.stack(rates, dim=1),
            "rates_dil": torch.stack(rates_dil, dim=1),
            "block_flops": block_flops,
            "flops": block_flops.sum(dim=1) + self._outer_flops(),
        }
        return logits, stats
