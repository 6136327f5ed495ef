"""Helpers of the kernel tests: compiled kernels (cached), closeness, random patch indices, packed weights, and
the shared patch-convolution case (a random block, its conv1 map, active patches and PyTorch references)."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from _blocks import random_block
from lasnet_tvm.block_runtime import compile_kernel
from lasnet_tvm.kernels.shapes import pack_weight_1x1, pack_weight_3x3
from lasnet_tvm.models.folded import gather_patches, scatter_add_relu


@functools.lru_cache(maxsize=None)
def k(name, **params):
    """Kernel ``name(**params)`` compiled for this CPU under its default schedule (cached)."""
    return compile_kernel(name, "llvm", **params)


def close(a, b):
    """float32 closeness relative to the reference's magnitude."""
    scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * scale)


def rand_idx(g, rate, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n = round(rate * g * g)
    return torch.randperm(g * g, generator=gen)[:n].sort().values.to(torch.int32)


def packed(w):
    """1x1 conv weights ``[C_out, C_in]`` in the kernels' packed layout."""
    return torch.from_numpy(pack_weight_1x1(w.numpy())).clone()  # a torch allocation: 64-byte aligned, as TVM assumes


def packed3x3(w, groups):
    """3x3 weights ``[C, C // groups, 3, 3]`` in the packed layout of the padded gather-conv and conv3x3."""
    return torch.from_numpy(pack_weight_3x3(w.numpy(), groups)).clone()  # a torch allocation: 64-byte aligned


def fresh(*shape, dtype=torch.float32):
    return torch.empty(*shape, dtype=dtype)


CONV_CASES = [  # (C, size, S, stride, groups)
    (8, 13, 4, 1, 1), (8, 12, 4, 1, 1), (16, 9, 1, 1, 1), (8, 10, 2, 2, 1), (16, 13, 2, 1, 4),
    (8, 15, 7, 1, 1), (16, 16, 8, 1, 2), (8, 14, 7, 2, 1), (12, 11, 4, 2, 3),
    (8, 28, 14, 1, 1),  # patch rows of 14 pixels: register tiles must not straddle rows
    (512, 7, 1, 1, 1),  # LAS-ResNet stage 4: the large-weight (channel-outer) schedules of both patch convs
]
CONV_RATES = [0.0, 0.5, 1.0]


def patch_case(case, rate) -> SimpleNamespace:
    """A block of ``case`` (C, size, S, stride, groups; C -> C -> 2C channels), a random conv1 map ``f1``, active
    patches ``idx`` at ``rate`` and the PyTorch references of the patch kernels: gathered windows ``win_ref``,
    conv2 ``ref`` ``[P, C, S, S]``, conv3 ``ref3``, a random identity ``ident`` and the block output ``want``."""
    C, size, S, stride, groups = case
    fb = random_block(c_in=C, c_mid=C, c_out=2 * C, size=size, stride=stride, S=S, groups=groups)
    s = fb.spec
    f1 = torch.randn(C, size, size)
    idx = rand_idx(s.grid, rate, seed=C + size)
    win_ref = gather_patches(s, f1, idx)
    ref = F.relu(F.conv2d(win_ref, fb.w2, fb.b2, stride=stride, groups=groups))
    ref3 = F.conv2d(ref, fb.w3[:, :, None, None], fb.b3)
    Ho = s.out_size
    ident = torch.randn(2 * C, Ho, Ho)
    return SimpleNamespace(C=C, size=size, S=S, stride=stride, groups=groups, fb=fb, s=s, f1=f1, idx=idx,
                           P=idx.numel(), L=(S - 1) * stride + 3, Ho=Ho, win_ref=win_ref, ref=ref, ref3=ref3,
                           w2t=fb.w2.permute(1, 2, 3, 0).contiguous(), ident=ident,
                           want=scatter_add_relu(s, ident, ref3, idx))
