"""The dense 1x1 conv against PyTorch, in each of its CPU schedules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _kernels import close, fresh, k, packed


# channel-vector schedule (C_out 8 / 16 / 64 lanes; row blocks of a large strided map) and row-vector schedule
# (C_out without a block of 8 lanes; large stride-1 maps)
@pytest.mark.parametrize("C_in,C_out,size,stride,relu", [(16, 8, 13, 1, True), (8, 16, 13, 2, False), (8, 64, 9, 1, False),
                                                          (8, 16, 70, 2, False), (12, 20, 8, 2, False), (8, 11, 7, 1, True),
                                                          (8, 16, 36, 1, True), (128, 128, 36, 1, True),
                                                          (64, 256, 34, 1, False)])
def test_dense_conv1x1(C_in, C_out, size, stride, relu):
    x, w, b = torch.randn(C_in, size, size), torch.randn(C_out, C_in), torch.randn(C_out)
    Ho = -(-size // stride)
    out = fresh(C_out, Ho, Ho)
    k("conv1x1", C_in=C_in, C_out=C_out, H=size, W=size, stride=stride, relu=relu)(x, packed(w), b, out)
    ref = F.conv2d(x[None], w[:, :, None, None], b, stride=stride)[0]
    close(out, F.relu(ref) if relu else ref)


# conv3 of the static block: the residual add + ReLU in the GEMM epilogue, in each CPU schedule
@pytest.mark.parametrize("C_in,C_out,size", [(16, 32, 13), (64, 256, 34), (8, 11, 7), (8, 64, 56)])
def test_residual_conv1x1(C_in, C_out, size):
    x, w, b = torch.randn(C_in, size, size), torch.randn(C_out, C_in), torch.randn(C_out)
    r = torch.randn(C_out, size, size)
    out = fresh(C_out, size, size)
    k("conv1x1", C_in=C_in, C_out=C_out, H=size, W=size, residual=True)(x, packed(w), b, r, out)
    close(out, F.relu(F.conv2d(x[None], w[:, :, None, None], b)[0] + r))



# conv1 of the static block: the output inside a zero border (zeroed by the caller) for the following 3x3 conv
@pytest.mark.parametrize("C_in,C_out,size,pad_for", [(16, 32, 13, 1), (16, 32, 13, 2), (64, 64, 56, 1), (32, 64, 36, 2)])
def test_bordered_conv1x1(C_in, C_out, size, pad_for):
    from lasnet_tvm.kernels.shapes import dense_padded_extent

    x, w, b = torch.randn(C_in, size, size), torch.randn(C_out, C_in), torch.randn(C_out)
    side = dense_padded_extent(size, pad_for)
    out = torch.zeros(C_out, side, side)
    k("conv1x1", C_in=C_in, C_out=C_out, H=size, W=size, pad_for=pad_for)(x, packed(w), b, out)
    want = torch.zeros(C_out, side, side)
    want[:, 1:size + 1, 1:size + 1] = F.relu(F.conv2d(x[None], w[:, :, None, None], b)[0])
    close(out, want)
