"""Random BN-folded LAS blocks and tie-free masks for the kernel / runtime / benchmark tests."""

from __future__ import annotations

import math

import torch

from lasnet_tvm.archs import BlockSpec, conv_out
from lasnet_tvm.models.folded import FoldedBlock
from lasnet_tvm.models.masker import patch_pool


def random_block(c_in=16, c_mid=8, c_out=16, size=13, stride=1, groups=1, S=4, se=0, downsample=None,
                 seed=0) -> FoldedBlock:
    """A FoldedBlock with random weights (scaled by 1/sqrt(fan-in)) for the given shape."""
    gen = torch.Generator().manual_seed(seed)
    out = conv_out(size, stride)
    if downsample is None:
        downsample = c_in != c_out or stride != 1
    spec = BlockSpec("test", 1, 0, c_in, c_mid, c_out, stride, groups, se, size, out, S, downsample)

    def rnd(*shape, fan=1):
        return torch.randn(*shape, generator=gen) / math.sqrt(fan)

    fb = FoldedBlock(spec, rnd(c_mid, c_in, fan=c_in), rnd(c_mid) * 0.1, rnd(c_in, fan=c_in), rnd(()) * 0.1,
                     rnd(c_mid, c_mid // groups, 3, 3, fan=9 * c_mid // groups), rnd(c_mid) * 0.1,
                     rnd(c_out, c_mid, fan=c_mid), rnd(c_out) * 0.1)
    if downsample:
        fb.wd, fb.bd = rnd(c_out, c_in, fan=c_in), rnd(c_out) * 0.1
    if se:
        fb.se = (rnd(se, c_mid, fan=c_mid), rnd(se) * 0.1, rnd(c_mid, se, fan=se), rnd(c_mid) * 0.1)
    return fb


def masker_diff(fb: FoldedBlock, x: torch.Tensor) -> torch.Tensor:
    """Masker logit difference ``[g*g]`` (float64, reference order) of one input ``[C, H, W]``."""
    s = fb.spec
    pooled = patch_pool(x[None].double(), s.S * s.stride)[0]
    return (torch.einsum("chw,c->hw", pooled, fb.wm.double()) + fb.bm.double()).flatten()


def set_rate(fb: FoldedBlock, x: torch.Tensor, rate: float, seed: int = 0) -> torch.Tensor:
    """Make the block's own masker select exactly ``round(rate * g * g)`` random patches on ``x``.

    Channel 0 of ``x`` is set to +1 on the chosen patches' input area and -1 elsewhere, ``wm = e_0`` and
    ``bm = 0``: the pooled logit difference is exactly +-1 (no near-ties). Returns the boolean mask ``[g, g]``.
    """
    s = fb.spec
    g = s.grid
    n = round(rate * g * g)
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.zeros(g * g, dtype=torch.bool)
    chosen[torch.randperm(g * g, generator=gen)[:n]] = True
    pin = s.S * s.stride
    up = chosen.view(g, g).repeat_interleave(pin, 0).repeat_interleave(pin, 1)[: s.in_size, : s.in_size]
    x[0] = torch.where(up, 1.0, -1.0)
    fb.wm = torch.zeros_like(fb.wm)
    fb.wm[0] = 1.0
    fb.bm = torch.zeros(())
    return chosen.view(g, g)


def untie(fb: FoldedBlock, x: torch.Tensor, quantile: float = 0.5) -> None:
    """Shift ``bm`` so that the masker's pooled logit differences on ``x`` are far from 0 (no near-ties)."""
    d = torch.sort(masker_diff(fb, x) - fb.bm.double()).values
    n = d.numel()
    if n == 1:
        fb.bm = torch.tensor(float(-d[0] + 0.5), dtype=torch.float32)
        return
    gaps = d[1:] - d[:-1]
    lo = min(max(0, int(quantile * (n - 1)) - n // 4), n - 2)
    hi = max(lo + 1, min(n - 1, int(quantile * (n - 1)) + n // 4 + 1))
    k = lo + int(torch.argmax(gaps[lo:hi]))
    fb.bm = torch.tensor(float(-(d[k] + d[k + 1]) / 2), dtype=torch.float32)
    assert masker_diff(fb, x).abs().min() > 1e-3 * max(1.0, float(d.abs().max()))
