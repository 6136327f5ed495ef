"""Squeeze-excitation kernels against PyTorch: on the active patches and on a dense map."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _blocks import random_block
from _kernels import close, fresh, k, rand_idx
from lasnet_tvm.models.folded import valid_patch_pixels


@pytest.mark.parametrize("S,size,rate", [(4, 13, 0.5), (2, 7, 1.0), (7, 15, 0.6), (1, 6, 0.3), (4, 9, 0.0)])
def test_se_patches(S, size, rate):
    C, R = 8, 3
    fb = random_block(c_in=C, c_mid=C, c_out=C, size=size, S=S, se=R)
    s = fb.spec
    idx = rand_idx(s.grid, rate, seed=size)
    P = idx.numel()
    x = torch.randn(P, C, S, S)
    valid = valid_patch_pixels(s, idx)[:, None].float()
    pooled = (x * valid).sum(dim=(0, 2, 3)) / valid.sum().clamp(min=1.0)
    w1, b1, w2, b2 = fb.se
    scale = torch.sigmoid(F.linear(F.relu(F.linear(pooled, w1, b1)), w2, b2))
    out = fresh(P, C, S, S)
    k("se", C=C, R=R, Ho=s.out_size, S=S)(x, idx, w1, b1, w2, b2, out)
    close(out, x * scale[None, :, None, None])


@pytest.mark.parametrize("C,size", [(8, 13), (16, 7), (12, 9), (16, 4)])
def test_se_dense(C, size):
    R = 4
    x = torch.randn(C, size, size)
    w1, b1, w2, b2 = torch.randn(R, C), torch.randn(R), torch.randn(C, R), torch.randn(C)
    o2 = fresh(C, size, size)
    k("se_dense", C=C, R=R, H=size, W=size)(x, w1, b1, w2, b2, o2)
    scale = torch.sigmoid(F.linear(F.relu(F.linear(x.mean(dim=(1, 2)), w1, b1)), w2, b2))
    close(o2, x * scale[:, None, None])
