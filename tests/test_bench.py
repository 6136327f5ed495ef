"""Quick run of ``lasnet-tvm bench block`` on a tiny shape: the JSON fields and the atomic writer."""

from __future__ import annotations

import itertools
import json

import pytest
from click.testing import CliRunner

from _bench import shared_kernels  # noqa: F401  (autouse fixture: each kernel compiled once)
from lasnet_tvm.records import write_json
from lasnet_tvm.cli.bench import bench
from lasnet_tvm.resources import hw_profiles_dir
from lasnet_tvm.timing import time_interleaved


def test_bench_block_json(tmp_path):
    out = tmp_path / "b.json"
    res = CliRunner().invoke(bench, ["block", "--channels", "16,8,16", "--size", "9", "--S", "2", "--repeats", "2",
                                     "--rates", "0,0.5,1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    for key in ("device", "shape", "S", "repeats", "static_ms", "torch_static_ms", "rates", "ablation",
                "max_rel_err", "machine", "versions", "git_revision"):
        assert key in data, key
    assert data["shape"] == {"C_in": 16, "C_mid": 8, "C_out": 16, "H": 9, "W": 9, "stride": 1, "groups": 1}
    assert [r["rate"] for r in data["rates"]] == [0.0, 0.5, 1.0]
    assert all(r["fused_ms"] > 0 and r["torch_sparse_ms"] > 0 for r in data["rates"])
    assert set(data["ablation"]) == {"rate", "none", "masker", "masker+gather", "all"}
    assert max(data["max_rel_err"].values()) < 1e-4
    assert "static" in res.output


def test_bench_bad_options():
    r = CliRunner().invoke(bench, ["block", "--channels", "16,8", "--size", "9"])
    assert r.exit_code != 0
    r = CliRunner().invoke(bench, ["block", "--channels", "16,8,16", "--size", "9", "--S", "20"])
    assert r.exit_code != 0


def test_write_json_atomic(tmp_path):
    p = tmp_path / "r.json"
    write_json(p, {"a": 1})
    write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert [f.name for f in tmp_path.iterdir()] == ["r.json"]
    assert p.stat().st_mode & 0o777 == 0o644  # readable by others, unlike mkstemp's 0o600


@pytest.mark.slow  # three compiled networks and an ONNX export: about 45 s; bench_model_quick covers the rest
def test_bench_model_rates_in_one_run(tmp_path):
    """`bench model --rates`: one compiled LAS model per rate, the static variants once, all in the same rounds;
    every LAS model checked against PyTorch, and the per-rate ratios computed from the same medians. The LAS
    models here place the masker separately (`--masker separate`; `bench_model_quick` has the default)."""
    import json

    from click.testing import CliRunner

    from lasnet_tvm.cli.main import cli

    out = tmp_path / "rates.json"
    res = CliRunner().invoke(cli, ["bench", "model", "--width-mult", "0.125", "--input-size", "64", "--images", "1",
                                   "--repeats", "2", "--rates", "0,1", "--threads", "2", "--baseline", "onnxruntime",
                                   "--masker", "separate", "--out", str(out)])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert d["masker"] == {k: ["separate"] * len(d["rate_per_block"]) for k in ("las@0", "las@1")}
    assert set(d["ms"]) == {"las@0", "las@1", "static", "torch_static", "torch_las_dense", "onnxruntime"}
    assert {"las@0", "las@1", "static", "onnxruntime"} <= set(d["max_rel_err"])
    assert max(d["max_rel_err"].values()) < 1e-4
    assert all(t["n"] == 2 for t in d["timings"].values())
    low, high = d["per_rate"]
    assert (low["rate_target"], high["rate_target"]) == (0, 1) and low["rate"] == 0.0 and high["rate"] == 1.0
    for r in d["per_rate"]:
        key = f"las@{r['rate_target']:g}"
        assert r["ms"] == d["ms"][key]
        assert r["speedup_vs_static"] == pytest.approx(d["ms"]["static"] / d["ms"][key])
        assert r["speedup_vs_onnxruntime"] == pytest.approx(d["ms"]["onnxruntime"] / d["ms"][key])
    assert "rate 0 (measured 0.00)" in res.output and out.with_suffix(".png").is_file()
    bad = CliRunner().invoke(cli, ["bench", "model", "--rates", "0,1.5", "--out", str(tmp_path / "x.json")])
    assert bad.exit_code != 0 and "1.5" in bad.output
    bad = CliRunner().invoke(cli, ["bench", "model", "--masker", "inside", "--out", str(tmp_path / "x.json")])
    assert bad.exit_code == 2 and "inside" in bad.output


def test_bench_model_auto_placement_is_the_predictors():
    from lasnet_tvm.archs import arch_spec
    from lasnet_tvm.benchmarks.model import _placements
    from lasnet_tvm.predictor.profiles import get_profile
    from lasnet_tvm.predictor.search import choose_masker

    spec = arch_spec("las_resnet50", "4-4-2-1")
    assert _placements("auto", spec, 0.1) == choose_masker(spec, get_profile("local"), 0.1)[0]
    assert [str(p) for p in _placements("fused", spec, 0.1)] == ["fused"] * len(spec.blocks)


def test_bench_model_quick(tmp_path):
    """`bench model` on a tiny network: every field present, compiled outputs checked, ONNX Runtime beside them."""
    import json

    from click.testing import CliRunner

    from lasnet_tvm.cli.main import cli

    out = tmp_path / "model.json"
    pt = tmp_path / "model.pt"
    res = CliRunner().invoke(cli, ["bench", "model", "--width-mult", "0.125", "--input-size", "64", "--images", "1",
                                   "--repeats", "1", "--rate", "0.5", "--breakdown", "--save-model", str(pt),
                                   "--threads", "2", "--baseline", "onnxruntime", "--out", str(out)])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    for k in ("machine", "versions", "git_revision", "time", "load_average", "arch", "granularity", "rate", "ms",
              "speedup_vs_static", "speedup_vs_torch_static", "compile_s", "max_rel_err", "timings"):
        assert k in d
    assert set(d["ms"]) == {"las", "static", "torch_static", "torch_las_dense", "torch_sparse", "onnxruntime"}
    assert set(d["max_rel_err"]) == set(d["ms"]) - {"torch_las_dense"}  # the reference itself
    assert max(d["max_rel_err"].values()) < 1e-4
    # --baseline onnxruntime: the static model in ONNX Runtime, TVM's thread count, timed in the same rounds
    ort = d["baselines"]["onnxruntime"]
    assert ort["ms"] == d["ms"]["onnxruntime"] and ort["threads"] == 2 and d["timings"]["onnxruntime"]["n"] == 1
    assert ort["las_latency_ratio"] == pytest.approx(d["ms"]["las"] / ort["ms"])
    assert ort["static_latency_ratio"] == pytest.approx(d["ms"]["static"] / ort["ms"])
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG" and "onnxruntime" in res.output
    assert 0.2 < d["rate"] < 0.8  # the maskers were calibrated to about half of the patches
    assert d["tuned"] is False and d["tuned_applied"] == {"las": [], "static": []}  # no --schedules: defaults
    # --breakdown: per-call profiles; every block calls its fused masker once per image, the static model none
    las, static = d["breakdown"]["las"], d["breakdown"]["static"]
    assert sum(v["calls"] for k, v in las["calls"].items() if k.startswith("masker_conv1x1")) == 16
    assert {"masker_conv1x1", "gather_conv3x3", "patch_conv1x1", "scatter_add"} <= set(las["families_ms"])
    assert "conv3x3" in static["families_ms"] and not any(k.startswith(("masker", "gather")) for k in static["calls"])
    assert las["instrumented_ms"] == pytest.approx(sum(v["ms"] for v in las["calls"].values()))

    # --save-model wrote the benchmarked model: compile it (LAS and static) and compare the two libraries
    libs = [tmp_path / "las.so", tmp_path / "static.so"]
    for lib, extra in zip(libs, ([], ["--static"])):
        res = CliRunner().invoke(cli, ["compile", str(pt), "--target", "llvm", "-o", str(lib), *extra])
        assert res.exit_code == 0, res.output
    cmp_out = tmp_path / "compare.json"
    res = CliRunner().invoke(cli, ["bench", "compare", *map(str, libs), "--images", "1", "--repeats", "2",
                                   "--model", str(pt), "--out", str(cmp_out)])
    assert res.exit_code == 0, res.output
    c = json.loads(cmp_out.read_text())
    assert set(c["max_rel_err"]) == set(map(str, libs)) and max(c["max_rel_err"].values()) < 1e-4
    assert [lib["path"] for lib in c["libraries"]] == [str(p) for p in libs]
    assert c["libraries"][0]["speedup_vs_first"] == 1.0 and c["libraries"][1]["manifest"]["static"] is True
    assert c["libraries"][0]["paired_speedup_vs_first"] == 1.0 and c["libraries"][1]["paired_speedup_vs_first"] > 0
    assert c["libraries"][0]["rate"] == pytest.approx(d["rate"])  # the same maskers, the same images
    assert c["libraries"][1]["rate"] == 1.0
    for k in ("machine", "versions", "git_revision", "timings"):
        assert k in c
    # libraries that are not compiled from the given model.pt: an error naming them, before any timing
    from lasnet_tvm.checkpoint import save_checkpoint
    from lasnet_tvm.models import build_model

    other = tmp_path / "other.pt"
    save_checkpoint(other, build_model("las_resnet50", "4-4-2-1", 64, 1000, 0.125).eval(), {"source": "test"})
    res = CliRunner().invoke(cli, ["bench", "compare", *map(str, libs), "--images", "1", "--model", str(other),
                                   "--out", str(tmp_path / "x.json")])
    assert res.exit_code != 0 and "las.so differs from the PyTorch reference" in res.output, res.output
    # bad input: one library, a missing one
    for args in ([str(libs[0])], [str(libs[0]), str(tmp_path / "missing.so")]):
        res = CliRunner().invoke(cli, ["bench", "compare", *args, "--out", str(tmp_path / "x.json")])
        assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "x.json").exists()


# ---------------------------------------------------------------------------------------------------------
# bench fusion / rate / granularity: quick runs on a 32->8->32 12x12 block (input 48, width x0.125)




TINY = ["--quick", "--input-size", "48", "--repeats", "1", "--device", "xeon-6248"]
POINT_KEYS = ("block", "stage", "S", "rate", "measured_ms", "predicted_ms", "measured_static_ms",
              "predicted_static_ms", "measured_ratio", "predicted_ratio", "measured_kernel_sum_ms", "spread", "kernels")
HEADER_KEYS = ("benchmark", "device", "target", "profile", "versions", "git_revision", "machine", "repeats",
               "threads", "kernel_repeat", "min_repeat_ms", "rates", "S", "max_rel_err")


def _invoke(args):
    from lasnet_tvm.cli.main import cli

    return CliRunner().invoke(cli, ["bench", *args])


def _load(path):
    assert path.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    data = json.loads(path.read_text())
    for key in HEADER_KEYS:
        assert key in data, key
    return data


def _check_kernels(rows):
    assert rows
    for k in rows:
        assert k["measured_ms"] > 0 and k["predicted_ms"] > 0 and k["kernel"]


def _check_accuracy(acc):
    for key in ("block", "dynamic", "static", "ratio", "kernel_sum"):
        assert {"n", "mape", "share_within", "spearman", "mean_ratio"} <= set(acc[key]), key
    assert acc["per_kernel"] and "gather_conv3x3" in acc["per_kernel"]


def test_bench_fusion_quick(tmp_path):
    res = _invoke(["fusion", *TINY, "--S", "2", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    data = _load(tmp_path / "fusion_las_resnet101_cpu_quick.json")
    assert data["block"]["C_mid"] == 8 and data["block"]["H"] == 12
    (case,) = data["cases"]
    assert (case["S"], case["rate"], case["active_patches"]) == (2, 0.6, 22)
    assert [v["variant"] for v in case["variants"]] == ["static", "none", "masker", "masker+gather", "all"]
    for v in case["variants"]:
        assert v["measured_ms"] > 0 and v["predicted_ms"] > 0 and v["spread"]["n"] == 1
        _check_kernels(v["kernels"])
    assert max(data["max_rel_err"].values()) < 1e-4
    assert "masker+gather" in res.output


def test_bench_rate_quick(tmp_path):
    res = _invoke(["rate", *TINY, "--stage", "1", "--S", "1,2", "--rates", "0,1", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    data = _load(tmp_path / "rate_las_resnet50_cpu_quick.json")
    assert [(p["S"], p["rate"]) for p in data["points"]] == [(1, 0.0), (1, 1.0), (2, 0.0), (2, 1.0)]
    for p in data["points"]:
        for key in POINT_KEYS:
            assert key in p, key
        assert min(p[k] for k in POINT_KEYS[4:10]) > 0
        _check_kernels(p["kernels"])
    _check_kernels(data["stages"][0]["static"]["kernels"])
    _check_accuracy(data["accuracy"])
    assert data["accuracy"]["block"]["n"] == 5  # 4 dynamic points + the static block
    # per stage: the dynamic points with active patches (rate 1); best S per rate with two S
    assert [a["n"] for a in data["accuracy"]["per_stage"].values()] == [2]
    assert data["agreement"]["n"] == 2 and 0 <= data["agreement"]["best_within"] <= 1
    assert "best-S agreement" in res.output and "per stage" in res.output


def test_bench_granularity_quick(tmp_path):
    prof = str(hw_profiles_dir() / "xeon-6248.yaml")
    res = _invoke(["granularity", *TINY, "--stage", "1", "--S", "1,2", "--rates", "0.5", "--profile", prof,
                   "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    data = _load(tmp_path / "granularity_las_resnet50_cpu_quick.json")
    (best,) = data["best"]
    assert best["S"] == [1, 2] and best["measured_best_S"] in (1, 2) and best["predicted_best_S"] in (1, 2)
    assert best["best_agree"] == (best["measured_best_S"] == best["predicted_best_S"])
    assert data["agreement"]["n"] == 1 and data["profile"]["name"] == "xeon-6248"
    assert best["best_within"] == (best["regret"] <= 0.05) and best["regret"] >= 0
    assert all(p["measured_ratio"] > 0 and p["predicted_ratio"] > 0 for p in data["points"])
    _check_accuracy(data["accuracy"])


def test_bench_rate_mismatch(tmp_path, monkeypatch):
    """A variant that differs from PyTorch stops the run, or is left out and listed with --exclude-mismatch."""
    from lasnet_tvm.benchmarks import rate
    from lasnet_tvm.errors import LasnetError

    real = rate.checked_dynamic

    def broken_S2(blk, r, seed=0):
        if blk.fb.spec.S == 2:
            raise LasnetError(f"block {blk.fb.spec.name} S=2 r={r}: output differs from PyTorch (test)")
        return real(blk, r, seed)

    monkeypatch.setattr(rate, "checked_dynamic", broken_S2)
    args = ["rate", *TINY, "--stage", "1", "--S", "1,2", "--rates", "0,1", "--out", str(tmp_path)]
    res = _invoke(args)
    assert res.exit_code != 0 and "differs from PyTorch" in res.output
    assert not list(tmp_path.iterdir())
    res = _invoke([*args, "--exclude-mismatch"])
    assert res.exit_code == 0, res.output
    data = _load(tmp_path / "rate_las_resnet50_cpu_quick.json")
    assert {p["S"] for p in data["points"]} == {1}
    assert [(e["S"], e["rate"]) for e in data["excluded"]] == [(2, 0.0), (2, 1.0)]
    assert "EXCLUDED" in res.output


@pytest.mark.parametrize("args, words", [
    (["rate", "--stage", "1", "--S", "40"], "exceeds"),
    (["granularity", "--rates", "0.5,1.5"], "[0, 1]"),
    (["rate", "--arch", "vgg16"], "unknown arch"),
    (["rate", "--stage", "1,7"], "stage 7"),
    (["fusion", "--block", "layer9.9"], "no block"),
    (["fusion", "--stage", "1,2"], "one block"),
])
def test_bench_sweeps_bad_options(args, words):
    res = _invoke([*args, "--quick", "--device", "xeon-6248"])
    assert res.exit_code != 0
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and words in lines[0], res.output


def test_git_revision_ignores_an_enclosing_foreign_repository(tmp_path):
    # an installed copy inside some other git repository (a pyenv or conda prefix) has no revision of ours
    import subprocess

    from lasnet_tvm import records

    checkout = tmp_path / "checkout"  # a source checkout: setup.py and the package at its top level
    (checkout / "lasnet_tvm").mkdir(parents=True)
    (checkout / "setup.py").write_text("")
    (checkout / "lasnet_tvm" / "__init__.py").write_text("")
    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], check=True)
    assert records.git_revision(checkout / "lasnet_tvm") is not None
    assert records.git_dirty_files(checkout / "lasnet_tvm") == []
    for top in (tmp_path / "prefix", tmp_path / "prefix" / "site-packages"):
        installed = tmp_path / "prefix" / "site-packages" / "lasnet_tvm"
        installed.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "-q", str(top)], check=True)
        assert records.git_revision(installed) is None and records.git_dirty_files(installed) is None


def test_time_interleaved_varies_the_order():
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    res = time_interleaved(fns, repeats=12, warmup=0, batch=1)
    rounds = [tuple(calls[i:i + 3]) for i in range(0, len(calls), 3)]
    assert all(sorted(r) == list("abc") for r in rounds)  # every round runs each variant once
    predecessors = {b: {a for a, b2 in itertools.pairwise(calls) if b2 == b} for b in "abc"}
    assert all(len(p) >= 2 for p in predecessors.values())  # none always follows the same variant
    assert {k: v["n"] for k, v in res.items()} == {"a": 12, "b": 12, "c": 12}
    assert all(len(v["samples_ms"]) == 12 and min(v["samples_ms"]) >= 0 for v in res.values())


def test_time_interleaved_settles_each_turn_untimed():
    """``settle``: one untimed call at the start of every turn of a variant, never counted as a sample."""
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "ab"}
    settle = {"a": lambda: calls.append("a-settle")}
    res = time_interleaved(fns, repeats=4, warmup=0, batch=2, settle=settle)
    assert calls.count("a-settle") == 2 and calls.count("a") == 4 and calls.count("b") == 4
    turns = [i for i, c in enumerate(calls) if c == "a-settle"]
    assert all(calls[i + 1 : i + 3] == ["a", "a"] for i in turns)  # the settle call opens a's turn of 2 calls
    assert {k: v["n"] for k, v in res.items()} == {"a": 4, "b": 4}


def test_other_load_counts_other_processes_only():
    """``OtherLoad``: a process spinning beside the block shows as its share of the CPUs; the block's own work
    does not (a load average would count both)."""
    import os
    import subprocess
    import sys
    import time

    from lasnet_tvm.records import OtherLoad

    with OtherLoad() as idle:  # what the rest of the machine runs anyway
        time.sleep(0.5)
    with OtherLoad() as own:
        t = time.monotonic()
        while time.monotonic() - t < 0.5:  # this process busy: not counted
            pass
    with OtherLoad() as other:
        spin = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 1: pass"])
        spin.wait()
    cpus = os.cpu_count() or 1
    assert None not in (idle.share, own.share, other.share)
    assert other.share > 0.6 / cpus  # one CPU spun for most of the interval (the interpreter's start aside)
    assert own.share < idle.share + 0.6 / cpus  # counted, the spinning would add a whole CPU
