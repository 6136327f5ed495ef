"""The dense 3x3 conv against PyTorch, on a plain map and on the zero-bordered map the static block's conv1
writes for it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _kernels import close, fresh, k, packed, packed3x3
from lasnet_tvm.kernels.shapes import dense_padded_extent


@pytest.mark.parametrize("C,size,stride,groups", [(8, 13, 1, 1), (16, 14, 2, 2), (12, 9, 1, 3), (16, 8, 2, 1)])
def test_dense_conv3x3(C, size, stride, groups):
    x, w, b = torch.randn(C, size, size), torch.randn(C, C // groups, 3, 3), torch.randn(C)
    Ho = -(-size // stride)
    out = fresh(C, Ho, Ho)
    k("conv3x3", C=C, H=size, W=size, stride=stride, groups=groups)(x, packed3x3(w, groups), b, out)
    ref = F.relu(F.conv2d(x[None], w, b, stride=stride, padding=1, groups=groups))[0]
    close(out, ref)
    # conv1 writing a zero-bordered map for a padding-free conv3x3 (the static block's pair)
    hq = dense_padded_extent(size, stride)
    xq = torch.zeros(C, hq, hq)
    k("conv1x1", C_in=C, C_out=C, H=size, W=size, relu=True, pad_for=stride)(x, packed(torch.eye(C)), torch.zeros(C), xq)
    close(xq[:, 1:size + 1, 1:size + 1], F.relu(x))
    border = xq.clone()
    border[:, 1:size + 1, 1:size + 1] = 0
    assert not border.any()
    outq = fresh(C, Ho, Ho)
    k("conv3x3", C=C, H=size, W=size, stride=stride, groups=groups, padded=True)(xq, packed3x3(w, groups), b, outq)
    close(outq, F.relu(F.conv2d(F.relu(x)[None], w, b, stride=stride, padding=1, groups=groups))[0])
