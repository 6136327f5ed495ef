"""Synthetic LAS blocks for measurements and checks: random BN-folded weights, and inputs on which the block's
own masker selects a chosen set of patches.

The masker of :func:`random_folded_block` is ``wm = e_0, bm = 0``: a patch is active where the mean of input
channel 0 over its input area is >= 0. :func:`input_at_rate` sets channel 0 to +1 on ``round(r g^2)`` random
patches and -1 elsewhere, so every execution of the block (PyTorch or compiled, any fusion) picks exactly those
patches without being fed a mask.
"""

from __future__ import annotations

import math

import torch

from ..archs import BlockSpec
from .folded import FoldedBlock


def random_folded_block(spec: BlockSpec, seed: int = 0) -> FoldedBlock:
    """Random BN-folded weights (scaled by 1/sqrt(fan-in), SE too) with the masker set to ``wm = e_0, bm = 0``."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, fan=1):
        return torch.randn(*shape, generator=gen) / math.sqrt(fan)

    s = spec
    wm = torch.zeros(s.c_in)
    wm[0] = 1.0
    fb = FoldedBlock(s, rnd(s.c_mid, s.c_in, fan=s.c_in), rnd(s.c_mid) * 0.1, wm, torch.zeros(()),
                     rnd(s.c_mid, s.c_mid // s.groups, 3, 3, fan=9 * s.c_mid // s.groups), rnd(s.c_mid) * 0.1,
                     rnd(s.c_out, s.c_mid, fan=s.c_mid), rnd(s.c_out) * 0.1)
    if s.downsample:
        fb.wd, fb.bd = rnd(s.c_out, s.c_in, fan=s.c_in), rnd(s.c_out) * 0.1
    if s.se_channels:
        R = s.se_channels
        fb.se = (rnd(R, s.c_mid, fan=s.c_mid), rnd(R) * 0.1, rnd(s.c_mid, R, fan=R), rnd(s.c_mid) * 0.1)
    return fb


def input_at_rate(spec: BlockSpec, rate: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random input ``[C_in, H, W]`` whose channel 0 makes the masker (``wm = e_0``) pick ``round(r g^2)`` patches.

    Returns ``(x, mask [g, g])``.
    """
    gen = torch.Generator().manual_seed(seed)
    g = spec.grid
    chosen = torch.zeros(g * g, dtype=torch.bool)
    chosen[torch.randperm(g * g, generator=gen)[: round(rate * g * g)]] = True
    pin = spec.S * spec.stride
    up = chosen.view(g, g).repeat_interleave(pin, 0).repeat_interleave(pin, 1)[: spec.in_size, : spec.in_size]
    x = torch.randn(spec.c_in, spec.in_size, spec.in_size, generator=gen)
    x[0] = torch.where(up, 1.0, -1.0)
    return x, chosen.view(g, g)
