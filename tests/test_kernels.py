"""Every TensorIR kernel (default CPU schedule) against the PyTorch references on random data."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from _blocks import masker_diff, random_block, set_rate, untie
from lasnet_tvm.block_runtime import compile_kernel
from lasnet_tvm.kernels.shapes import dense_padded_extent, pack_weight_1x1, pack_weight_3x3, padded_extent
from lasnet_tvm.models.folded import (active_indices, coarse_mask, gather_patches, scatter_add_relu,
                                      valid_patch_pixels)


@functools.lru_cache(maxsize=None)
def kernel(name, **params):
    return compile_kernel(name, "llvm", **params)


def k(name, **params):
    return kernel(name, **params)


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


MASKER_CASES = [  # (C_in, C_mid, size, S, stride)
    (16, 8, 13, 4, 1), (16, 8, 12, 4, 1), (8, 6, 9, 1, 1), (16, 10, 13, 2, 2), (8, 8, 16, 8, 1),
    (8, 8, 15, 7, 1), (8, 8, 14, 7, 2),
    (128, 128, 34, 4, 1),  # a large map: conv1 over row blocks of packed input
]


@pytest.mark.parametrize("case", MASKER_CASES)
@pytest.mark.parametrize("rate", [0.0, 1.0, "natural"])
def test_masker_kernels(case, rate):
    c_in, c_mid, size, S, stride = case
    fb = random_block(c_in=c_in, c_mid=c_mid, c_out=c_in, size=size, stride=stride, S=S)
    x = torch.randn(c_in, size, size)
    if rate == "natural":
        untie(fb, x)
    else:
        set_rate(fb, x, rate)
    mask = coarse_mask(fb, x[None])[0].flatten()
    idx_ref = active_indices(mask.view(fb.spec.grid, -1))
    G = mask.numel()
    # fused: masker channel inside conv1
    f1, m, idx, cnt = fresh(c_mid, size, size), fresh(G, dtype=torch.int32), fresh(G, dtype=torch.int32), fresh(1, dtype=torch.int32)
    fn = k("masker_conv1x1", C_in=c_in, C_mid=c_mid, H=size, W=size, S=S, stride=stride)
    fn(x, packed(fb.w1), fb.b1, fb.wm, fb.bm.reshape(1), f1, m, idx, cnt)
    close(f1, F.relu(torch.einsum("oc,chw->ohw", fb.w1, x) + fb.b1[:, None, None]))
    assert torch.equal(m.bool(), mask)
    assert int(cnt[0]) == idx_ref.numel()
    assert torch.equal(idx[: int(cnt[0])], idx_ref)
    # fused, conv1 stored zero-bordered
    hp = padded_extent(size, S, stride)
    f1p = torch.zeros(c_mid, hp, hp)
    fn = k("masker_conv1x1", C_in=c_in, C_mid=c_mid, H=size, W=size, S=S, stride=stride, pad=True)
    fn(x, packed(fb.w1), fb.b1, fb.wm, fb.bm.reshape(1), f1p, m, idx, cnt)
    close(f1p[:, 1:size + 1, 1:size + 1], f1)
    f1p[:, 1:size + 1, 1:size + 1] = 0
    assert not f1p.any() and torch.equal(m.bool(), mask)  # the border stays zero
    # unfused masker
    m2, idx2, cnt2 = fresh(G, dtype=torch.int32), fresh(G, dtype=torch.int32), fresh(1, dtype=torch.int32)
    k("masker", C_in=c_in, H=size, W=size, S=S, stride=stride)(x, fb.wm, fb.bm.reshape(1), m2, idx2, cnt2)
    assert torch.equal(m2.bool(), mask)
    assert torch.equal(idx2[: int(cnt2[0])], idx_ref)
    if rate == "natural":
        assert masker_diff(fb, x).abs().min() > 1e-3


CONV_CASES = [  # (C, size, S, stride, groups)
    (8, 13, 4, 1, 1), (8, 12, 4, 1, 1), (16, 9, 1, 1, 1), (8, 10, 2, 2, 1), (16, 13, 2, 1, 4),
    (8, 15, 7, 1, 1), (16, 16, 8, 1, 2), (8, 14, 7, 2, 1), (12, 11, 4, 2, 3),
    (8, 28, 14, 1, 1),  # patch rows of 14 pixels: register tiles must not straddle rows
    (512, 7, 1, 1, 1),  # LAS-ResNet stage 4: the large-weight (channel-outer) schedules of both patch convs
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("rate", [0.0, 0.5, 1.0])
def test_patch_conv_kernels(case, rate):
    C, size, S, stride, groups = case
    fb = random_block(c_in=C, c_mid=C, c_out=2 * C, size=size, stride=stride, S=S, groups=groups)
    s = fb.spec
    f1 = torch.randn(C, size, size)
    idx = rand_idx(s.grid, rate, seed=C + size)
    P = idx.numel()
    L = (S - 1) * stride + 3
    win_ref = gather_patches(s, f1, idx)
    ref = F.relu(F.conv2d(win_ref, fb.w2, fb.b2, stride=stride, groups=groups))
    w2t = fb.w2.permute(1, 2, 3, 0).contiguous()
    out = fresh(P, C, S, S)
    k("gather_conv3x3", C=C, H=size, W=size, S=S, stride=stride, groups=groups)(f1, idx, w2t, fb.b2, out)
    close(out, ref)
    hp = padded_extent(size, S, stride)  # zero-bordered conv1 map read without staging
    f1p = torch.zeros(C, hp, hp)
    f1p[:, 1:size + 1, 1:size + 1] = f1
    outp = fresh(P, C, S, S)
    w2b = packed3x3(fb.w2, groups)
    k("gather_conv3x3", C=C, H=size, W=size, S=S, stride=stride, groups=groups, padded=True)(f1p, idx, w2b, fb.b2, outp)
    close(outp, ref)
    win = fresh(P, C, L, L)
    k("gather", C=C, H=size, W=size, S=S, stride=stride)(f1, idx, win)
    close(win, win_ref)
    out2 = fresh(P, C, S, S)
    k("window_conv3x3", C=C, S=S, stride=stride, groups=groups)(win, w2t, fb.b2, out2)
    close(out2, ref)
    # conv3 on the patches
    p3 = fresh(P, 2 * C, S, S)
    k("patch_conv1x1", C_in=C, C_out=2 * C, S=S)(out, packed(fb.w3), fb.b3, p3)
    ref3 = F.conv2d(ref, fb.w3[:, :, None, None], fb.b3)
    close(p3, ref3)
    # scatter-add (fused) and scatter + add_relu (unfused)
    Ho = s.out_size
    ident = torch.randn(2 * C, Ho, Ho)
    want = scatter_add_relu(s, ident, ref3, idx)
    o = fresh(2 * C, Ho, Ho)
    k("scatter_add", C=2 * C, Ho=Ho, Wo=Ho, S=S)(ident, p3, idx, o)
    close(o, want)
    # in place, on a non-negative identity (a block input): only the active patches are touched
    nonneg = ident.relu()
    want_nonneg = scatter_add_relu(s, nonneg, ref3, idx)
    k("scatter_add", C=2 * C, Ho=Ho, Wo=Ho, S=S, inplace=True)(nonneg, p3, idx)
    close(nonneg, want_nonneg)
    # conv3 with the in-place scatter-add in its epilogue: the patches never leave the kernel
    fused = ident.relu()
    k("patch_conv1x1", C_in=C, C_out=2 * C, S=S, Ho=Ho)(fused, out, idx, packed(fb.w3), fb.b3)
    close(fused, want_nonneg)
    canvas = torch.full((2 * C, Ho, Ho), 7.0)
    k("scatter", C=2 * C, Ho=Ho, Wo=Ho, S=S)(p3, idx, canvas)
    g = s.grid
    big = torch.zeros(2 * C, g * S, g * S)
    for n, q in enumerate(idx.tolist()):
        big[:, (q // g) * S:(q // g + 1) * S, (q % g) * S:(q % g + 1) * S] = ref3[n]
    close(canvas, big[:, :Ho, :Ho])
    o2 = fresh(2 * C, Ho, Ho)
    k("add_relu", C=2 * C, H=Ho, W=Ho)(ident, canvas, o2)
    close(o2, want)
    if P:  # the active pixels really changed (the test can fail)
        assert not torch.allclose(want, F.relu(ident))


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


# channel-vector schedule (C_out 8 / 16 / 64 lanes; row blocks of a large strided map), the same over packed
# input row blocks (large stride-1 maps, many channels) and row-vector schedule (C_out without a block of 8
# lanes; a large stride-1 map with few channels)
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


@pytest.mark.parametrize("C,size,stride,groups", [(8, 13, 1, 1), (16, 14, 2, 2), (12, 9, 1, 3), (16, 8, 2, 1)])
def test_dense_conv3x3_and_se(C, size, stride, groups):
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
    R = 4
    w1, b1, w2, b2 = torch.randn(R, C), torch.randn(R), torch.randn(C, R), torch.randn(C)
    o2 = fresh(C, Ho, Ho)
    k("se_dense", C=C, R=R, H=Ho, W=Ho)(out, w1, b1, w2, b2, o2)
    scale = torch.sigmoid(F.linear(F.relu(F.linear(ref.mean(dim=(1, 2)), w1, b1)), w2, b2))
    close(o2, ref * scale[:, None, None])


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


def test_kernel_registry():
    from lasnet_tvm import kernels
    from lasnet_tvm.errors import LasnetError

    for name in kernels.KERNELS:
        mod = kernels.get(name)
        assert callable(kernels.builder(name)) and callable(mod.schedule_cpu) and callable(mod.schedule_cuda)
    with pytest.raises(LasnetError):
        kernels.get("nope")
