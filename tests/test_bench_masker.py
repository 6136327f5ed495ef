"""``lasnet-tvm bench masker`` on a tiny model: both masker placements per block and rate, measured and predicted,
the predictor's choice against the measured best; regret and agreement follow from the rows; a variant that
differs from PyTorch stops the run (or is left out with --exclude-mismatch); bad options are one-line errors."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from click.testing import CliRunner

from _bench import shared_kernels  # noqa: F401  (autouse fixture: each kernel compiled once)
from lasnet_tvm.archs import arch_spec
from lasnet_tvm.benchmarks import masker
from lasnet_tvm.block_plan import MaskerPlacement
from lasnet_tvm.block_runtime import CompiledBlock
from lasnet_tvm.cli.main import cli
from lasnet_tvm.predictor import predict_block
from lasnet_tvm.predictor.profiles import resolve_profile

SIZE = 48
TINY = ["masker", "--quick", "--input-size", str(SIZE), "--repeats", "1", "--device", "xeon-6248", "--stage", "2",
        "--rates", "0.1,0.5"]
STEM = "masker_las_resnet50_cpu_quick"
ROW_KEYS = ("block", "stage", "stride", "S", "rate", "active_patches", "num_patches", "measured_ms", "predicted_ms",
            "measured_best", "predicted_choice", "regret", "within_5pct")


def _invoke(args):
    return CliRunner().invoke(cli, ["bench", *args])


def _spec(name: str, S: int):
    (b,) = [b for b in arch_spec("las_resnet50", 1, SIZE, width_mult=0.125).blocks if b.name == name]
    return replace(b, S=S)


def test_bench_masker_quick(tmp_path):
    res = _invoke([*TINY, "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / f"{STEM}.png").read_bytes()[:4] == b"\x89PNG"
    d = json.loads((tmp_path / f"{STEM}.json").read_text())
    for key in ("benchmark", "machine", "versions", "git_revision", "load_average", "profile", "repeats", "rates",
                "S", "blocks", "rows", "agreement", "excluded", "max_rel_err"):
        assert key in d, key
    assert d["benchmark"] == "masker" and d["S"] == [4, 4, 2, 1] and d["max_rel_err"] < 1e-4 and not d["excluded"]
    # stage 2: its first block (stride 2, downsample) and its first identity block, at the stage's default S
    assert [(b["block"]["block"], b["block"]["stride"], b["block"]["downsample"]) for b in d["blocks"]] == [
        ("layer2.0", 2, True), ("layer2.1", 1, False)]
    hw = resolve_profile("xeon-6248", None)
    names = ("layer2.0", "layer2.1")
    assert [(r["block"], r["rate"]) for r in d["rows"]] == [(b, r) for b in names for r in (0.1, 0.5)]
    for row in d["rows"]:
        assert all(k in row for k in ROW_KEYS)
        meas, pred = row["measured_ms"], row["predicted_ms"]
        assert set(meas) == set(pred) == {"fused", "separate"} and min(meas.values()) > 0
        spec = _spec(row["block"], 4)
        for m in ("fused", "separate"):  # the predictor's price of this very block, rate and placement
            assert pred[m] == pytest.approx(predict_block(spec, hw, row["rate"], masker=m).dynamic_s * 1e3)
        blk = next(b for b in d["blocks"] if b["block"]["block"] == row["block"])
        assert all(blk["timings"][f"{m}@{row['rate']}"]["median_ms"] == meas[m] for m in meas)
        assert row["measured_best"] == min(meas, key=meas.get)
        assert row["predicted_choice"] == ("separate" if pred["separate"] < pred["fused"] else "fused")
        assert row["regret"] == pytest.approx(meas[row["predicted_choice"]] / meas[row["measured_best"]] - 1)
        assert row["within_5pct"] == (row["regret"] <= 0.05) and row["regret"] >= 0
    a = d["agreement"]
    within = sum(r["within_5pct"] for r in d["rows"])
    assert (a["cases"], a["within_5pct"], a["share"]) == (4, within, within / 4)
    assert a["exact"] == sum(r["measured_best"] == r["predicted_choice"] for r in d["rows"])
    assert a["per_stage"]["2"]["cases"] == 4 and a["goal"]["met"] == (within / 4 >= 0.8)
    assert "layer2.0" in res.output and f"{within}/4" in res.output


def test_regret_and_agreement_follow_the_rows():
    spec = _spec("layer2.0", 4)
    tie = masker.case_row(spec, 0.1, 3, {"fused": 1.0, "separate": 0.9}, {"fused": 2.0, "separate": 2.0})
    assert (tie["measured_best"], tie["predicted_choice"]) == ("separate", "fused")  # a predicted tie: fused
    assert tie["regret"] == pytest.approx(1.0 / 0.9 - 1) and not tie["within_5pct"] and not tie["agree"]
    close = masker.case_row(spec, 0.5, 8, {"fused": 1.04, "separate": 1.0}, {"fused": 1.0, "separate": 1.5})
    assert close["regret"] == pytest.approx(0.04) and close["within_5pct"] and not close["agree"]
    exact = masker.case_row(replace(spec, stage=3), 0.5, 2, {"fused": 2.0, "separate": 1.0},
                            {"fused": 3.0, "separate": 1.0})
    assert exact["regret"] == 0 and exact["within_5pct"] and exact["agree"]
    a = masker.agreement([tie, close, exact])
    assert (a["cases"], a["within_5pct"], a["exact"]) == (3, 2, 1) and a["share"] == pytest.approx(2 / 3)
    assert a["goal"] == {"share": 0.8, "met": False}
    assert a["per_stage"]["2"]["within_5pct"] == 1 and a["per_stage"]["3"]["share"] == 1.0
    assert masker.agreement([close, exact])["goal"]["met"]


def test_bench_masker_mismatch(tmp_path, monkeypatch):
    """A separate-placement block whose output is off stops the run naming block and placement, or is left out."""
    real = CompiledBlock.__call__

    def off_in_stride_2(self, x, out=None):
        y, mask = real(self, x, out)
        if self.masker is MaskerPlacement.SEPARATE and self.fb.spec.stride == 2:
            y += 0.5
        return y, mask

    monkeypatch.setattr(CompiledBlock, "__call__", off_in_stride_2)
    res = _invoke([*TINY, "--out", str(tmp_path)])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 1 and lines[-1].startswith("Error:"), res.output
    assert "placement separate" in lines[-1] and "layer2.0" in lines[-1] and "differs" in lines[-1]
    assert not list(tmp_path.iterdir())
    res = _invoke([*TINY, "--out", str(tmp_path), "--exclude-mismatch"])
    assert res.exit_code == 0, res.output
    d = json.loads((tmp_path / f"{STEM}.json").read_text())
    assert [(e["block"], e["placement"], e["rate"]) for e in d["excluded"]] == [("layer2.0", "separate", 0.1),
                                                                               ("layer2.0", "separate", 0.5)]
    assert {r["block"] for r in d["rows"]} == {"layer2.1"} and d["agreement"]["cases"] == 2
    assert "EXCLUDED" in res.output


@pytest.mark.parametrize("args, code, words", [
    (["--repeats", "0"], 2, "--repeats"),
    (["--width-mult", "-1"], 2, "--width-mult"),
    (["--S", "4,4"], 1, "--S"),
    (["--S", "20"], 1, "S=20"),
    (["--rates", "0.1,1.5"], 1, "[0, 1]"),
    (["--stage", "5"], 1, "stage 5"),
    (["--tracker", "host:9190", "--key", "k", "--target", "llvm"], 1, "--tracker"),
])
def test_bench_masker_bad_options(tmp_path, args, code, words):
    res = _invoke(["masker", "--quick", "--device", "xeon-6248", "--out", str(tmp_path), *args])
    lines = res.output.strip().splitlines()
    assert res.exit_code == code and len(lines) == 1 and lines[0].startswith("Error:") and words in lines[0], res.output
    assert not list(tmp_path.iterdir())
