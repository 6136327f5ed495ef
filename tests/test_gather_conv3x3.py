"""The gather-conv kernels against PyTorch: the fused gather + 3x3 conv on active patches (staged windows and
zero-bordered map), and its unfused form (gather, then the window conv3x3)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _blocks import random_block
from _kernels import CONV_CASES, CONV_RATES, close, fresh, k, packed3x3, patch_case
from lasnet_tvm.kernels.shapes import padded_extent
from lasnet_tvm.models.folded import gather_patches


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("rate", CONV_RATES)
def test_gather_conv3x3(case, rate):
    c = patch_case(case, rate)
    C, size, S, stride, groups = case
    out = fresh(c.P, C, S, S)
    k("gather_conv3x3", C=C, H=size, W=size, S=S, stride=stride, groups=groups)(c.f1, c.idx, c.w2t, c.fb.b2, out)
    close(out, c.ref)
    hp = padded_extent(size, S, stride)  # zero-bordered conv1 map read without staging
    f1p = torch.zeros(C, hp, hp)
    f1p[:, 1:size + 1, 1:size + 1] = c.f1
    outp = fresh(c.P, C, S, S)
    w2b = packed3x3(c.fb.w2, groups)
    fn = k("gather_conv3x3", C=C, H=size, W=size, S=S, stride=stride, groups=groups, padded=True)
    fn(f1p, c.idx, w2b, c.fb.b2, outp)
    close(outp, c.ref)


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("rate", CONV_RATES)
def test_gather_and_window_conv3x3(case, rate):
    c = patch_case(case, rate)
    C, size, S, stride, groups = case
    win = fresh(c.P, C, c.L, c.L)
    k("gather", C=C, H=size, W=size, S=S, stride=stride)(c.f1, c.idx, win)
    close(win, c.win_ref)
    out2 = fresh(c.P, C, S, S)
    k("window_conv3x3", C=C, S=S, stride=stride, groups=groups)(win, c.w2t, c.fb.b2, out2)
    close(out2, c.ref)


def test_symbolic_p_one_function_serves_all():
    """One compiled gather-conv serves P = 0, 1, ..., g*g (no recompilation)."""
    C, size, S = 8, 9, 4
    fb = random_block(c_in=C, c_mid=C, c_out=C, size=size, S=S)
    s = fb.spec
    fn = k("gather_conv3x3", C=C, H=size, W=size, S=S, stride=1, groups=1)
    f1 = torch.randn(C, size, size)
    w2t = fb.w2.permute(1, 2, 3, 0).contiguous()
    for P in range(s.grid ** 2 + 1):
        idx = torch.arange(P, dtype=torch.int32)
        out = fresh(P, C, S, S)
        fn(f1, idx, w2t, fb.b2, out)
        close(out, F.relu(F.conv2d(gather_patches(s, f1, idx), fb.w2, fb.b2)))
