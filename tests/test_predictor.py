"""The latency model: hand-worked arithmetic, monotonicity and the paper's qualitative findings."""

import time

import pytest

from lasnet_tvm.archs import arch_spec
from lasnet_tvm.predictor import ops
from lasnet_tvm.predictor.network import predict_block, predict_network
from lasnet_tvm.predictor.ops import op_latency
from lasnet_tvm.predictor.profiles import get_profile, profile_from_dict
from lasnet_tvm.predictor.search import search_granularity, stage_candidates

V100, TX2 = get_profile("v100"), get_profile("tx2")

TOY = profile_from_dict({
    "kind": "gpu", "target": "cuda", "pes": 16, "lanes": 1, "clock_mhz": 1000, "dram_gbps": 100,
    "onchip_gbps": 400, "pe_bytes_per_cycle": 64, "l2_kb": 512, "local_kb": 64,
    "efficiency": {"compute": 0.5, "dram": 1.0, "onchip": 1.0, "dram_half_bytes": 28, "onchip_half_bytes": 0,
                   "launch_us": 1.0, "call_us": 0.5},
}, "toy")


def block(arch, S, index, **kw):
    return arch_spec(arch, S, **kw).blocks[index]


def test_compute_bound_op_by_hand():
    # one output of a 1x1 conv with 1024 input channels: a single 1x1x1x1 tile
    op = ops.conv("c", 1, 1024, 1, 1)
    r = op_latency(op, TOY)
    compute = 1024 / (1000e6 * 0.5)  # 1024 FMAs on one lane at 1 GHz, 50% efficiency
    moved = 1024 * 4 + 1024 * 4 + 4  # input, weights, output bytes
    dram = moved / 100e9  # long contiguous runs: efficiency ~1
    onchip = max(moved / 400e9, moved / (64 * 1000e6))  # aggregate vs one PE's link
    assert r.compute == pytest.approx(compute, rel=1e-9)
    assert r.dram == pytest.approx(dram, rel=1e-6)
    assert r.onchip == pytest.approx(onchip, rel=1e-9)
    assert r.total == pytest.approx(1.5e-6 + dram + onchip + compute, rel=1e-6)
    assert r.dominant == "compute"


def test_memory_bound_op_by_hand():
    # gather one 3x3 window of a 1-channel 8x8 map: no arithmetic, short rows
    op = ops.gather("g", 1, 1, 1, 8, 3)
    r = op_latency(op, TOY)
    run = 3 * 4  # a window row: 12 contiguous bytes
    dram = (36 / (run / (run + 28)) + 36) / 100e9  # 9 floats read in 12-byte runs, 9 written densely
    # best tile is one element per PE (9 tiles, 1 wave): aggregate 9 x 8 bytes vs 8 bytes per PE link
    onchip = max(9 * 8 / 400e9, 8 / (64 * 1000e6))
    assert r.compute == 0.0 and r.dominant == "memory"
    assert r.dram == pytest.approx(dram, rel=1e-9)
    assert r.onchip == pytest.approx(onchip, rel=1e-9)
    assert r.total == pytest.approx(1.5e-6 + dram + onchip, rel=1e-9)


def test_small_runs_cost_more():
    # the same bytes scattered in rows of S floats: smaller S, slower
    lat = [op_latency(ops.scatter_add("s", 3136 // (S * S), 256, S, 56), V100).total for S in (1, 2, 4, 8)]
    assert lat == sorted(lat, reverse=True) and lat[0] > 2 * lat[-1]


@pytest.mark.parametrize("arch, index", [("las_resnet101", 1), ("las_resnet101", 4), ("las_regnety_800mf", 2)])
@pytest.mark.parametrize("hw", [V100, TX2], ids=["v100", "tx2"])
@pytest.mark.parametrize("S", [1, 4, 7])
def test_more_rate_never_faster(arch, index, hw, S):
    b = block(arch, S, index)
    lat = [predict_block(b, hw, r / 20).dynamic_s for r in range(21)]
    assert all(a <= b_ + 1e-15 for a, b_ in zip(lat, lat[1:]))


@pytest.mark.parametrize("field, values", [("pes", (20, 40, 80, 160)), ("dram_gbps", (300, 900, 3000)),
                                           ("onchip_gbps", (1000, 2155, 8000)), ("lanes", (32, 64, 128))])
def test_more_hardware_never_slower(field, values):
    for r in (0.2, 0.7):
        for fusion in ("none", "all"):
            nets = [predict_network("las_resnet50", V100.with_(**{field: v}), "4-4-2-1", r, fusion) for v in values]
            for a, b in zip(nets, nets[1:]):
                assert b.static_s <= a.static_s + 1e-15 and b.dynamic_s <= a.dynamic_s + 1e-15
                for x, y in zip(a.blocks, b.blocks):
                    assert y.dynamic_s <= x.dynamic_s + 1e-15


@pytest.mark.parametrize("index", [1, 4])  # stage-1 and stage-2 stride-1 blocks
def test_pixel_granularity_slower_than_static_on_v100(index):
    # the static baseline is the toolkit's (conv3 and the residual add + ReLU are separate kernels), which
    # moves the crossover of S=1 from r ~ 0.15 (cuDNN-style fused add) to r ~ 0.5
    b = block("las_resnet101", 1, index)
    assert predict_block(b, V100, 0.6).ratio > 1.0
    assert predict_block(block("las_resnet101", 4, index), V100, 0.6).ratio < predict_block(b, V100, 0.6).ratio


def test_ratio_falls_with_S_with_diminishing_returns():
    r = 0.5  # exact at every S below (P = r * grid^2 rounds the same way)
    rl = {S: predict_block(block("las_resnet101", [S, 1, 1, 1], 1), V100, r).ratio for S in (1, 2, 4, 8, 28)}
    assert rl[1] > rl[2] > rl[4] > rl[8]
    assert (rl[1] - rl[4]) > 4 * abs(rl[8] - rl[28])


def test_tx2_closer_to_rate_than_v100():
    for r in (0.3, 0.5, 0.7):
        for index in (1, 4, 8):
            b = block("las_resnet101", 4, index)
            assert abs(predict_block(b, TX2, r).ratio - r) < abs(predict_block(b, V100, r).ratio - r)
        gap = {hw.name: predict_network("las_resnet101", hw, "4-4-2-1", r).ratio - r for hw in (V100, TX2)}
        assert abs(gap["tx2"]) < abs(gap["v100"])


def test_table1_fusion_order():
    b = block("las_resnet101", 4, 1)  # stage-1 block, S=4
    lat = {f: predict_block(b, V100, 0.6, f).dynamic_s * 1e6 for f in ("none", "masker", "masker+gather", "all")}
    print("Table 1 (us), paper 163.2 / 90.1 / 86.7 / 71.4:", {k: round(v, 1) for k, v in lat.items()})
    assert lat["none"] > lat["masker"] > lat["masker+gather"] > lat["all"]


def test_ops_breakdown_sums_to_block():
    bl = predict_block(block("las_regnety_800mf", 4, 2), TX2, 0.5)
    assert [o.name for o in bl.dynamic] == ["masker_conv1", "mask_index", "conv2", "se_pool", "se_fc1", "se_fc2",
                                            "se_scale", "conv3", "scatter_add"]
    assert bl.dynamic_s == pytest.approx(sum(o.launch + o.dram + o.onchip + o.compute for o in bl.dynamic))


def test_static_resnet101_plausible():
    # a ResNet-101 (7.8 GFLOPs) at batch 1 cannot beat the FP32 peak, and stays within a few times of it
    for hw in (V100, TX2):
        net = predict_network("las_resnet101", hw, 1, 0.5)
        floor = 7.8e9 / (hw.peak_gflops * 1e9)
        assert floor < net.static_s < 10 * floor


def test_resnet101_prediction_speed():
    op_latency.cache_clear()
    t = time.perf_counter()
    predict_network("las_resnet101", V100.with_(clock_mhz=1531), "4-4-2-1", 0.5)
    assert time.perf_counter() - t < 1.0


def test_search_granularity():
    assert stage_candidates(56) == [1, 2, 4, 7, 8, 14, 16, 28, 32]
    assert stage_candidates(7) == [1, 2, 4] and stage_candidates(7, include_full=True) == [1, 2, 4, 7]
    op_latency.cache_clear()
    t = time.perf_counter()
    res = search_granularity("las_resnet101", TX2.with_(clock_mhz=1301), 0.5)
    assert time.perf_counter() - t < 5.0
    assert res.per_stage[3] == 1 and res.granularity.count("-") == 3
    for S, score in zip(res.per_stage, res.scores):
        best = min(score.values())
        assert score[S] <= best * 1.05 + 1e-15
        assert all(v > best * 1.05 for k, v in score.items() if k < S)  # smallest S within 5% of the best
    fastest = search_granularity("las_resnet101", TX2, 0.5, tolerance=0.0)
    assert fastest.prediction.dynamic_s <= res.prediction.dynamic_s + 1e-12


@pytest.mark.parametrize("arch, index", [("las_resnet50", 0), ("las_resnet50", 3), ("las_resnet50", 5),
                                         ("las_regnety_400mf", 2), ("las_regnety_800mf", 1)])
@pytest.mark.parametrize("fusion", ["none", "masker", "masker+gather", "all", "static"])
def test_plan_steps_sum_to_block(arch, index, fusion):
    # the per-kernel predictions of the compiled block's plan add up to predict_block, op for op
    from lasnet_tvm.block_plan import block_plan
    from lasnet_tvm.predictor.kernel_ops import predict_step, step_ops

    for S in (1, 2, 7):
        b = block(arch, S, index)
        static = fusion == "static"
        plan = block_plan(b, "all" if static else fusion, static)
        for rate in (0.0, 0.3, 1.0):
            bl = predict_block(b, TX2, rate, "all" if static else fusion)
            P = round(rate * b.num_patches)
            want = bl.static if static else bl.dynamic
            assert [o.name for s in plan for o in step_ops(s, P)] == [o.name for o in want]
            assert sum(predict_step(s, P, TX2) for s in plan) == pytest.approx(sum(o.total for o in want), rel=1e-12)
