"""The latency model prices kernels as they are compiled: calls and launches, SE as one kernel, kernels
without active patches, cache residency of a grouped conv's input (hand-computed values)."""

import pytest

from lasnet_tvm.predictor import ops
from lasnet_tvm.predictor.kernel_ops import kernel_ops, step_latencies
from lasnet_tvm.predictor.ops import _terms, op_latency
from lasnet_tvm.predictor.profiles import profile_from_dict

CPU = profile_from_dict({"kind": "cpu", "target": "llvm", "pes": 2, "lanes": 16, "clock_mhz": 2400,
                         "dram_gbps": 10.0, "l2_kb": 32768, "local_kb": 512,
                         "efficiency": {"launch_us": 20.0, "call_us": 3.0}}, "cpu")
GPU = profile_from_dict({"kind": "gpu", "target": "cuda", "pes": 16, "lanes": 64, "clock_mhz": 1000,
                         "dram_gbps": 100.0, "l2_kb": 4096, "local_kb": 64,
                         "efficiency": {"launch_us": 8.0, "call_us": 2.0}}, "gpu")


class _Step:
    def __init__(self, kernel, params, out="x"):
        self.kernel, self.params, self.outputs = kernel, params, ((out, None),)


@pytest.mark.parametrize("kernel,params", [
    ("gather_conv3x3", dict(C=64, H=14, W=14, S=2, padded=True)), ("patch_conv1x1", dict(C_in=64, C_out=256, S=2)),
    ("window_conv3x3", dict(C=64, S=2)), ("gather", dict(C=64, H=14, W=14, S=2))])
def test_zero_patches_cost_one_call(kernel, params):
    """A kernel with no active patches is called and returns: call_us, not a launch."""
    assert sum(op_latency(o, CPU).total for o in kernel_ops(kernel, params, 0)) == pytest.approx(3e-6)
    assert sum(op_latency(o, CPU).launch for o in kernel_ops(kernel, params, 5)) == pytest.approx(23e-6)


@pytest.mark.parametrize("hw,launches", [(CPU, 2), (GPU, 6)])
def test_se_is_one_kernel(hw, launches):
    """SE on patches is one call: on a CPU two parallel regions (pool, scaling), on a GPU six grids."""
    lat = step_latencies(_Step("se", dict(C=104, R=26, Ho=14, S=2)), 20, hw)
    assert [o.name for o in lat] == ["se_pool", "se_fc1", "se_fc2", "se_scale"]
    e = hw.efficiency
    assert sum(o.launch for o in lat) == pytest.approx((e.call_us + launches * e.launch_us) * 1e-6)
    dense = step_latencies(_Step("se_dense", dict(C=104, R=26, H=14, W=14)), 0, hw)
    assert sum(o.launch for o in dense) == pytest.approx((e.call_us + (2 if hw is CPU else 5) * e.launch_us) * 1e-6)


def test_se_without_patches_runs_its_pool_region_only():
    lat = step_latencies(_Step("se", dict(C=104, R=26, Ho=14, S=2)), 0, CPU)
    assert sum(o.launch for o in lat) == pytest.approx(23e-6)  # one call, the pool's region over C; scaling: none
    assert lat[0].memory == pytest.approx(lat[0].dram + lat[0].onchip) and lat[3].total == 0.0


def _tile(terms, tile):
    """Index of a tile ``(T_P, T_C, T_H, T_W)`` in the candidate grid of ``_terms``."""
    return tuple(int(list(a.ravel()).index(t)) for a, t in zip(terms.tiles, tile))


def test_grouped_conv_reads_its_resident_band_once():
    # grouped 3x3 conv, 16 -> 16 channels in 2 groups (8 per group), 8 x 8 map; tile: 8 channels x 1 x 1 pixel
    op = ops.conv("c", 1, 16, 16, 8, k=3, groups=2)
    far = _terms(op, 2, 16, 0.5, False, 0)  # 512 B local memory: the 8-channel band of 3 rows (768 B) spills
    near = _terms(op, 2, 16, 64.0, False, 0)  # 64 KiB: it stays
    i = _tile(far, (1, 8, 1, 1))
    w, out = 8 * 72 * 4, 8 * 4  # the tile's weights and output
    # spilled: a 3 x 3 window of 8 channels, 288 B in 12-byte runs (24 runs); weights 1 run, output 8 runs of 4 B
    assert far.tile_bytes[i] == 288 + w + out and far.tile_runs[i] == pytest.approx(24 + 1 + 8)
    # resident: the tile's own column of 3 rows x 8 channels (96 B) in runs of whole 3-row bands (96 B): 1 run
    assert near.tile_bytes[i] == 96 + w + out and near.tile_runs[i] == pytest.approx(1 + 1 + 8)


def test_windows_from_a_resident_map_are_read_once():
    """A gather-conv reads 3 x 3 windows out of an 8 x 8 map: when the map's planes of a tile's channels fit in
    local memory, a tile reads its own pixels only, as whole planes; off-chip, at most the map once."""
    (op,) = kernel_ops("gather_conv3x3", dict(C=16, H=8, W=8, S=1, padded=True), 6)
    far = _terms(op, 2, 16, 0.5, False, 0)  # 16 planes of 8 x 8 (4 KiB) do not fit in 256 B
    near = _terms(op, 2, 16, 64.0, False, 0)
    i = _tile(far, (1, 16, 1, 1))
    w, out = 16 * 144 * 4, 16 * 4  # weights of 16 output channels; one output pixel x 16 channels, 4-byte runs
    assert far.tile_bytes[i] == 16 * 9 * 4 + w + out and far.tile_runs[i] == pytest.approx(48 + 1 + 16)
    assert near.tile_bytes[i] == 16 * 4 + w + out and near.tile_runs[i] == pytest.approx(16 * 4 / 256 + 1 + 16)
    # off-chip: 6 windows x 9 pixels x 16 channels in 12-byte runs cost 3456 x (1 + 60 / 12) = 20736 B; the
    # whole map (4096 B in 256-byte planes) 4096 x (1 + 60 / 256) = 5056 B: the map wins
    hw = CPU.with_(dram=1.0)
    moved = 5056 + w + 6 * 16 * 4 * (1 + 60 / 1e12)  # map, weights, output written densely
    assert op_latency(op, hw).dram == pytest.approx(moved / 10e9, rel=1e-9)
    assert op_latency(op, hw.with_(l2_kb=4.0)).dram == pytest.approx((20736 + w + 384) / 10e9, rel=1e-6)


def use_fixed_local_profile(tmp_path, monkeypatch):
    """Make ``local`` a fixed CPU profile (in a cache folder under ``tmp_path``), whatever this machine is."""
    import yaml

    cache = tmp_path / "cache" / "lasnet-tvm"
    cache.mkdir(parents=True)
    (cache / "local.yaml").write_text(yaml.safe_dump({"name": "local", "kind": "cpu", "target": "llvm", "pes": 2,
                                                      "lanes": 16, "clock_mhz": 2400, "dram_gbps": 10.0,
                                                      "l2_kb": 32768, "local_kb": 512}))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_compile_granularity_auto_writes_the_choice(tmp_path, monkeypatch):
    """compile --granularity auto picks S per stage with the predictor and records the predicted ms per option."""
    import json

    from click.testing import CliRunner

    from _compiler import small_model

    from lasnet_tvm.checkpoint import save_checkpoint
    from lasnet_tvm.cli.main import cli
    from lasnet_tvm.predictor.search import search_spec

    use_fixed_local_profile(tmp_path, monkeypatch)
    model = small_model(gran="1-1-1-1")
    pt = save_checkpoint(tmp_path / "model.pt", model)
    r = CliRunner().invoke(cli, ["compile", str(pt), "-o", str(tmp_path / "m.so"), "--granularity", "auto",
                                 "--rate", "0.3"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "m.json").read_text())
    g = m["granularity_choice"]
    from lasnet_tvm.predictor.profiles import get_profile

    expect = search_spec(model.spec, get_profile("local"), 0.3)
    assert g["profile"] == "local" and g["rate"] == 0.3 and g["chosen"] == expect.granularity
    assert [s["S"] for s in g["per_stage"]] == list(expect.per_stage)
    assert m["granularity"] == [expect.per_stage[b.stage - 1] for b in model.spec.blocks]
    for s, scores in zip(g["per_stage"], expect.scores):
        assert s["predicted_ms"] == {str(k): round(v * 1e3, 4) for k, v in scores.items()}
        assert s["predicted_ms"][str(s["S"])] <= min(s["predicted_ms"].values()) * 1.05
    assert len(g["per_stage"][0]["predicted_ms"]) > 1  # stage 1 had options to choose from


def test_se_fcs_run_serially_on_a_cpu():
    """SE's FCs are scalar loops outside any parallel region: R x C FMAs on one lane of one core."""
    lat = step_latencies(_Step("se", dict(C=104, R=26, Ho=14, S=2)), 20, CPU)
    fc1, fc2 = lat[1], lat[2]
    per_fma = 1 / (2400e6 * CPU.efficiency.compute)
    assert fc1.compute == pytest.approx(104 * 26 * per_fma) and fc2.compute == pytest.approx(26 * 104 * per_fma)
    gpu = step_latencies(_Step("se", dict(C=104, R=26, Ho=14, S=2)), 20, GPU)
    assert gpu[1].compute < 104 * 26 / (1000e6 * GPU.efficiency.compute) / 8  # spread over lanes there
