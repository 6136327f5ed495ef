"""The whole compiled LAS block (fused, every unfused variant, static) against the PyTorch references."""

from __future__ import annotations

import pytest
import torch
import tvm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _blocks import random_block, set_rate, untie
from lasnet_tvm.block_plan import Fusion
from lasnet_tvm.block_runtime import CompiledBlock
from lasnet_tvm.errors import LasnetError
from lasnet_tvm.models import build_model
from lasnet_tvm.models.folded import dense_masked_block, fold_block, sparse_block


def close(a, b):
    scale = max(1.0, float(b.abs().max()))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * scale)


BLOCKS = {
    "s4": dict(c_in=16, c_mid=8, c_out=16, size=13, S=4),
    "s1": dict(c_in=8, c_mid=8, c_out=16, size=7, S=1),
    "s2_stride2_groups_se": dict(c_in=8, c_mid=16, c_out=16, size=14, stride=2, S=2, groups=4, se=4),
    "s7": dict(c_in=8, c_mid=8, c_out=8, size=15, S=7, downsample=False),
    "s8_stride2": dict(c_in=16, c_mid=8, c_out=32, size=17, stride=2, S=8),
}


@pytest.mark.parametrize("name", list(BLOCKS))
@pytest.mark.parametrize("fusion", Fusion.values())
def test_block_matches_references(name, fusion):
    fb = random_block(**BLOCKS[name], seed=len(name))
    blk = None
    for rate in (0.0, 1.0, 0.4, "natural"):
        x = torch.randn(fb.spec.c_in, fb.spec.in_size, fb.spec.in_size)
        if rate == "natural":  # the block's own (random) masker weights, bias moved away from ties
            fb = random_block(**BLOCKS[name], seed=len(name))
            untie(fb, x)
            blk = CompiledBlock.build(fb, "llvm", fusion=fusion)
        else:  # set_rate always sets the same masker weights, so one build serves every rate
            want = set_rate(fb, x, rate, seed=int(rate * 10))
            blk = blk or CompiledBlock.build(fb, "llvm", fusion=fusion)
        ref, ref_mask = sparse_block(fb, x[None])
        out, mask = blk(x)
        assert torch.equal(mask, ref_mask[0])
        if rate != "natural":
            assert torch.equal(mask, want)
        close(out, ref[0])
        close(out, dense_masked_block(fb, x[None], ref_mask)[0])


def test_static_block_and_model_blocks():
    model = build_model("las_regnety_400mf", granularity="4-4-2-1", input_size=64, width_mult=0.25).eval()
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    blocks = [b for b in model.modules() if hasattr(b, "masker")][:2]
    for b in blocks:
        fb = fold_block(b)
        x = torch.randn(1, fb.spec.c_in, fb.spec.in_size, fb.spec.in_size)
        untie(fb, x[0])
        out, mask = CompiledBlock.build(fb, "llvm", fusion="all")(x)
        ref, ref_mask = sparse_block(fb, x)
        assert out.shape == ref.shape and torch.equal(mask, ref_mask)
        close(out, ref)
        out_s, none = CompiledBlock.build(fb, "llvm", static=True)(x)
        assert none is None
        close(out_s, dense_masked_block(fb, x, torch.ones_like(ref_mask)))


def test_tvm_tensor_input_and_reuse():
    fb = random_block(**BLOCKS["s4"])
    blk = CompiledBlock.build(fb, "llvm")
    for seed in range(3):  # the same object serves different masks / P
        x = torch.randn(16, 13, 13, generator=torch.Generator().manual_seed(seed))
        set_rate(fb, x, [0.0, 1.0, 0.5][seed], seed=seed)
        blk = CompiledBlock.build(fb, "llvm") if seed == 0 else blk
        out, mask = blk(tvm.runtime.tensor(x.numpy()))
        close(out, sparse_block(fb, x[None])[0][0])
        assert blk.active_count() == int(mask.sum())


def test_time_steps_times_every_kernel_at_the_active_count():
    fb = random_block(**BLOCKS["s4"])
    x = torch.randn(16, 13, 13, generator=torch.Generator().manual_seed(5))
    set_rate(fb, x, 0.5, seed=5)
    blk = CompiledBlock.build(fb, "llvm")
    _, mask = blk(x)
    times = blk.time_steps(x, repeat=2, min_repeat_ms=1)
    assert [t["kernel"] for t in times] == [st.kernel for st in blk.steps]
    assert all(t["median_ms"] > 0 and len(t["samples_ms"]) == 2 for t in times)
    patch_steps = [t["kernel"] for t in times if t["P"] is not None]
    assert patch_steps == ["gather_conv3x3", "patch_conv1x1", "scatter_add"]
    assert all(t["P"] == int(mask.sum()) for t in times if t["P"] is not None)
    out, _ = blk(x)  # timing leaves the block usable and its result unchanged
    close(out, sparse_block(fb, x[None])[0][0])


def test_bad_inputs():
    fb = random_block(**BLOCKS["s4"])
    with pytest.raises(LasnetError, match="fusion"):
        CompiledBlock.build(fb, fusion="some")
    blk = CompiledBlock.build(fb)
    with pytest.raises(LasnetError, match="input shape"):
        blk(torch.randn(16, 12, 12))
    with pytest.raises(LasnetError, match="batch 1"):
        blk(torch.randn(2, 16, 13, 13))
    with pytest.raises(LasnetError, match="float32"):
        blk(torch.randn(16, 13, 13, dtype=torch.float64))
    bad = random_block(**BLOCKS["s4"])
    bad.w3 = torch.randn(3, 3)
    with pytest.raises(LasnetError, match="w3"):
        CompiledBlock.build(bad)
    from dataclasses import replace

    big = random_block(**BLOCKS["s4"])
    big.spec = replace(big.spec, S=20)
    with pytest.raises(LasnetError, match="exceeds"):
        CompiledBlock.build(big)


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(S=st.sampled_from([1, 2, 3, 4, 5]), size=st.integers(5, 12), stride=st.sampled_from([1, 2]),
       rate=st.floats(0, 1), seed=st.integers(0, 1000))
def test_property_fused_equals_sparse_reference(S, size, stride, rate, seed):
    out_size = -(-size // stride)
    S = min(S, out_size)
    fb = random_block(c_in=8, c_mid=8, c_out=8, size=size, stride=stride, S=S, seed=seed)
    x = torch.randn(8, size, size, generator=torch.Generator().manual_seed(seed))
    want = set_rate(fb, x, rate, seed=seed)
    out, mask = CompiledBlock.build(fb, "llvm", fusion="all")(x)
    assert torch.equal(mask, want)
    close(out, sparse_block(fb, x[None])[0][0])


@pytest.mark.gpu
@pytest.mark.parametrize("fusion", Fusion.values())
@pytest.mark.parametrize("name", ["s4", "s2_stride2_groups_se"])
def test_block_on_cuda(name, fusion):
    fb = random_block(**BLOCKS[name])
    x = torch.randn(fb.spec.c_in, fb.spec.in_size, fb.spec.in_size)
    set_rate(fb, x, 0.5)
    ref, ref_mask = sparse_block(fb, x[None])
    blk = CompiledBlock.build(fb, "cuda", fusion=fusion)
    out, mask = blk(x.cuda())
    assert torch.equal(mask.cpu(), ref_mask[0])
    close(out.cpu(), ref[0])
    out_s, _ = CompiledBlock.build(fb, "cuda", static=True)(x.cuda())
    close(out_s.cpu(), dense_masked_block(fb, x[None], torch.ones_like(ref_mask))[0])
