"""LAS models: shapes, both PyTorch references, masks, FLOPs accounting, export."""

import pytest
import torch

from lasnet_tvm.archs import arch_spec, parse_granularity
from lasnet_tvm.errors import LasnetError
from lasnet_tvm.models import ARCHS, build_model
from lasnet_tvm.models.folded import coarse_mask, dense_masked_block, fold_block, sparse_block
from lasnet_tvm.models.sparse import SparseLASNet
from model_utils import randomize_

SMALL = dict(width_mult=0.25)


@pytest.mark.parametrize("arch", ARCHS)
def test_full_size_macs_match_published(arch):
    expected = {"las_resnet50": 4.09e9, "las_resnet101": 7.80e9, "las_regnety_400mf": 0.40e9, "las_regnety_800mf": 0.83e9}
    flops = build_model(arch).static_flops()
    assert flops == pytest.approx(expected[arch], rel=0.02)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("gran,size", [("4-4-2-1", 64), ("3-3-3-1", 96), ("1", 64)])
def test_sparse_reference_equals_dense_masked(arch, gran, size):
    with torch.random.fork_rng():  # the conv weights come from the global RNG: fixed here, whatever ran before
        torch.manual_seed(size)
        model = randomize_(build_model(arch, gran, input_size=size, num_classes=7, **SMALL), seed=1)
    # a fixed input: a masker logit that the two paths' rounding puts on either side of 0 would flip a mask
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        logits, stats = model(x, return_stats=True)
        sparse_logits, masks = SparseLASNet(model)(x, return_masks=True)
    for m_dense, m_sparse in zip(stats["masks"], masks):
        assert torch.equal(m_dense[:, 0].bool(), m_sparse)
    # float32 rounding grows with the activations' scale (logits of these random deep stacks reach ~1e3), so
    # the error is measured against the logits' scale, as `lasnet-tvm verify` does: 1e-4 of max |logit|
    scale = logits.abs().max().item()
    torch.testing.assert_close(sparse_logits, logits, rtol=1e-4, atol=1e-4 * max(1.0, scale))
    rates = stats["rates"]
    assert rates.shape == (2, len(model.blocks))
    assert 0.0 < rates.mean().item() < 1.0  # masks are mixed, so the test exercises gather and scatter


@pytest.mark.parametrize("bias,rate", [(-1.0, 0.0), (1.0, 1.0)])
def test_all_or_nothing_masks(bias, rate):
    model = randomize_(build_model("las_regnety_400mf", "4-4-2-1", input_size=64), masker_bias=bias, force=True)
    static = model.static_counterpart()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        logits, stats = model(x, return_stats=True)
        sparse = SparseLASNet(model)(x)
    assert torch.all(stats["rates"] == rate)
    torch.testing.assert_close(sparse, logits, rtol=1e-4, atol=1e-4)
    if rate == 1.0:  # a fully active LAS model is its static counterpart
        torch.testing.assert_close(static(x), logits, rtol=1e-5, atol=1e-5)


def test_unselected_pixels_equal_relu_identity():
    model = randomize_(build_model("las_resnet50", "4-4-2-1", input_size=64, **SMALL))
    block = model.blocks[1]  # stride 1, no downsample: identity is the input
    fb = fold_block(block)
    x = torch.randn(1, block.spec.c_in, block.spec.in_size, block.spec.in_size)
    mask = torch.zeros(1, block.spec.grid, block.spec.grid, dtype=torch.bool)
    mask[0, 0, 1] = True
    out, _ = sparse_block(fb, x, mask)
    S = block.spec.S
    off = torch.ones_like(out, dtype=torch.bool)
    off[..., 0:S, S : 2 * S] = False
    torch.testing.assert_close(out[off], torch.relu(x)[off])
    torch.testing.assert_close(out, dense_masked_block(fb, x, mask), rtol=1e-4, atol=1e-4)


def test_block_flops_by_hand():
    # las_resnet50 at width 0.25, input 64: layer1.0 is 16 -> 16 -> 64 channels on 16x16, with downsample.
    model = randomize_(build_model("las_resnet50", "4-4-2-1", input_size=64, **SMALL))
    block = model.blocks[0]
    s = block.spec
    assert (s.c_in, s.c_mid, s.c_out, s.in_size, s.out_size, s.S) == (16, 16, 64, 16, 16, 4)
    static = 16 * 16 * 256 + 16 * 16 * 9 * 256 + 16 * 64 * 256 + 16 * 64 * 256
    assert block.static_flops() == static
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, 0, 0] = 1.0  # one 4x4 patch in the corner: 16 of 256 output pixels
    rate, rate_dil, flops = block.block_stats(mask)
    assert rate.item() == pytest.approx(16 / 256)
    assert rate_dil.item() == pytest.approx(25 / 256)  # the patch dilated by the 3x3 box, clipped at the corner
    masker = 16 * 256 + (2 * 16 + 2) * 16
    expected = masker + 16 * 16 * 25 + (16 * 16 * 9 + 16 * 64) * 16 + 16 * 64 * 256
    assert flops.item() == pytest.approx(expected)


def test_network_flops_follow_masks():
    model = randomize_(build_model("las_resnet50", "4-4-2-1", input_size=64, **SMALL))
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        _, stats = model(x, return_stats=True)
        _, static_stats = model.static_counterpart()(x, return_stats=True)
    assert stats["flops"].shape == (3,)
    assert torch.all(stats["flops"] < static_stats["flops"])
    torch.testing.assert_close(static_stats["flops"], torch.full((3,), model.static_flops(), dtype=torch.float32))


def test_gumbel_training_masks_are_hard_and_differentiable():
    model = build_model("las_resnet50", "4-4-2-1", input_size=64, **SMALL).train()
    x = torch.randn(2, 3, 64, 64)
    logits, stats = model(x, temperature=5.0, return_stats=True)
    for m in stats["masks"]:
        assert torch.all((m == 0) | (m == 1))
    (logits.sum() + stats["flops"].sum() * 1e-9).backward()
    assert model.blocks[0].masker.conv2.weight.grad is not None


def test_export_eval_model_with_stats():
    model = randomize_(build_model("las_regnety_400mf", "4-4-2-1", input_size=64, **SMALL))
    x = torch.randn(1, 3, 64, 64)
    ep = torch.export.export(model, (x,), kwargs={"return_stats": True})
    logits, stats = ep.module()(x, return_stats=True)
    ref_logits, ref_stats = model(x, return_stats=True)
    torch.testing.assert_close(logits, ref_logits)
    torch.testing.assert_close(stats["rates"], ref_stats["rates"])


def test_granularity_forms_and_errors():
    depths = (3, 4, 6, 3)
    assert parse_granularity("4-4-2-1", depths) == (4,) * 3 + (4,) * 4 + (2,) * 6 + (1,) * 3
    assert parse_granularity(2, depths) == (2,) * 16
    assert parse_granularity(list(range(1, 17)), depths) == tuple(range(1, 17))
    with pytest.raises(LasnetError, match="expected 1, 4"):
        parse_granularity("4-4-2", depths)
    assert parse_granularity("1,2" + ",1" * 14, depths) == (1, 2) + (1,) * 14
    for malformed in ("-1-4-2-1", "4--4-2-1", "4-4,2-1", "4-4-2-", "four", "0"):
        with pytest.raises(LasnetError, match="positive integers joined by"):
            parse_granularity(malformed, depths)
    with pytest.raises(LasnetError, match="exceeds its feature size"):
        arch_spec("las_resnet50", "4-4-2-8")
    with pytest.raises(LasnetError, match="unknown arch"):
        arch_spec("resnet18")


def test_masker_matches_official_pooling_when_divisible():
    model = randomize_(build_model("las_resnet50", "8-4-7-1", **SMALL))
    block = model.blocks[4]  # layer2.1, 28x28, S=4
    x = torch.randn(1, block.spec.c_in, 28, 28)
    logits = block.masker.conv2(torch.nn.functional.adaptive_avg_pool2d(x, 7))
    official = logits[:, 0] >= logits[:, 1]
    assert torch.equal(coarse_mask(fold_block(block), x), official)
