"""gather_conv1x1 (conv1 on the active patches' windows, the separate masker placement) against PyTorch: conv1 +
ReLU on the whole map, zero padding, then each patch's window, read back from the zero-bordered map the kernel
writes into; nothing outside the windows is written. Its CUDA schedule (shared memory, register tile)."""

from __future__ import annotations

import functools
import shutil

import pytest
import torch
import torch.nn.functional as F
import tvm

from _cuda_ir import cuda_schedule_on_cpu
from _kernels import close, fresh, k, packed, rand_idx
from lasnet_tvm.archs import BlockSpec, conv_out
from lasnet_tvm.kernels.shapes import padded_extent
from lasnet_tvm.models.folded import gather_patches, patch_windows
from lasnet_tvm.targets import resolve_target

CASES = [  # (C_in, C_out, size, S, stride): edge patches overhang the map where size is no multiple of S * stride
    (16, 8, 13, 4, 1), (8, 16, 12, 4, 1), (16, 8, 9, 1, 1), (8, 8, 10, 2, 2), (16, 32, 13, 2, 1),
    (8, 16, 15, 1, 2), (8, 8, 11, 4, 2), (24, 40, 7, 1, 1),
]


def _spec(size, S, stride):
    return BlockSpec("t", 1, 0, 8, 8, 8, stride, 1, 0, size, conv_out(size, stride), S, stride != 1)


def _reference(x, w, b, spec, idx):
    f1 = F.relu(F.conv2d(x[None], w[:, :, None, None], b))[0]
    return gather_patches(spec, f1, idx)  # zero outside the map: conv2's padding


def _case(case, rate):
    C_in, C_out, size, S, stride = case
    spec = _spec(size, S, stride)
    g = spec.grid
    gen = torch.Generator().manual_seed(size * S + stride)
    x = torch.randn(C_in, size, size, generator=gen)
    w = torch.randn(C_out, C_in, generator=gen) / C_in ** 0.5
    b = torch.randn(C_out, generator=gen)  # large biases: relu(bias) outside the map would show
    if rate == "one":
        idx = torch.tensor([g * g - 1], dtype=torch.int32)  # the corner patch: its window overhangs the map
    else:
        idx = rand_idx(g, {"none": 0.0, "all": 1.0}.get(rate, rate), seed=size)
    Hp = padded_extent(size, S, stride)
    f1 = torch.full((C_out, Hp, Hp), float("nan"))  # what the kernel does not write stays NaN
    return dict(C_in=C_in, C_out=C_out, H=size, W=size, S=S, stride=stride), (x, idx, packed(w), b), f1, \
        (spec, idx, _reference(x, w, b, spec, idx))


def _check(f1, spec, idx, ref):
    rows, cols = patch_windows(spec, idx)
    close(f1[:, rows[:, :, None], cols[:, None, :]].permute(1, 0, 2, 3), ref)
    written = torch.zeros(f1.shape[1:], dtype=torch.bool)
    for r, c in zip(rows, cols):
        written[r[:, None], c[None, :]] = True
    assert f1[:, ~written].isnan().all()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("rate", ["none", "one", 0.5, "all"])
def test_gather_conv1x1(case, rate):
    params, args, f1, ref = _case(case, rate)
    k("gather_conv1x1", **params)(*args, f1)
    _check(f1, *ref)


@functools.lru_cache(maxsize=None)
def _on_cpu(**params):
    return cuda_schedule_on_cpu("gather_conv1x1", **params)


@pytest.mark.parametrize("case", CASES[2:5])
@pytest.mark.parametrize("rate", ["one", 0.5, "all"])
def test_gather_conv1x1_under_cuda_schedule(case, rate):
    """The CUDA schedule's TensorIR (threads serial) computes the same on the CPU."""
    params, args, f1, ref = _case(case, rate)
    _on_cpu(**params)(*args, f1)
    _check(f1, *ref)


@pytest.mark.parametrize("p", [dict(C_in=64, C_out=64, H=14, W=14, S=2, stride=2),
                               dict(C_in=256, C_out=64, H=56, W=56, S=4, stride=1)])
def test_gather_conv1x1_cuda_schedule_is_a_tiled_gemm(p):
    """The CUDA schedule, in the bounded form the compiler builds, stages its tiles in shared memory and keeps a
    4 x 4 register tile per thread; with nvcc, ptxas reports shared memory and no spills."""
    from lasnet_tvm import kernels as K
    from lasnet_tvm.kernels._bounded import bounded
    from lasnet_tvm.targets import cuda_source

    func = bounded(K.scheduled("gather_conv1x1", resolve_target("cuda -arch=sm_90"), **p).mod["main"], 4)
    src = cuda_source(tvm.IRModule({"main": func}), "sm_90")
    assert "__shared__" in src and "__syncthreads()" in src
    assert "float acc_local_ptr[16];" in src  # 4 x 4 outputs per thread, in registers
    if all(shutil.which(t) for t in ("nvcc", "ptxas", "fatbinary")):
        from lasnet_tvm.cuda_binary import compile_fatbin

        (k,) = compile_fatbin(src, "sm_90").kernels.values()
        assert k.shared_bytes > 0 and k.spills == 0
