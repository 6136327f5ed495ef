"""``bench model --baseline``: the static model exported to ONNX and run by ONNX Runtime matches PyTorch (the
whole command runs in tests/test_bench.py ``test_bench_model_quick``), and a missing runtime is a one-line error
saying what to install."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from _bench import INPUT_SIZE, WIDTH
from lasnet_tvm.benchmarks import baselines
from lasnet_tvm.benchmarks.block import TOLERANCE, rel_err
from lasnet_tvm.cli.main import cli
from lasnet_tvm.errors import LasnetError
from lasnet_tvm.models import build_model


def test_onnxruntime_runs_the_static_regnety(tmp_path):
    torch.manual_seed(0)
    static = build_model("las_regnety_400mf", "4-4-2-1", INPUT_SIZE, 10, WIDTH).eval().static_counterpart()
    (ort,) = baselines.build(["onnxruntime"], static, INPUT_SIZE, 2, tmp_path).values()
    assert ort.info["threads"] == 2 and ort.info["version"] and ort.info["export_s"] > 0
    x = torch.randn(1, 3, INPUT_SIZE, INPUT_SIZE)
    out = ort.run(x.numpy())
    with torch.no_grad():
        ref = static(x)
    assert out.shape == (1, 10) and rel_err(torch.from_numpy(out), ref) < TOLERANCE  # grouped convs and SE


@pytest.mark.parametrize("name", baselines.BASELINES)
def test_missing_runtime_is_a_one_line_error(tmp_path, monkeypatch, name):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m == name else real(m, *a))
    res = CliRunner().invoke(cli, ["bench", "model", "--baseline", name, "--out", str(tmp_path / "m.json")])
    lines = res.output.strip().splitlines()
    assert res.exit_code != 0 and len(lines) == 1 and "pip install" in lines[0] and name in lines[0], res.output
    assert not list(tmp_path.iterdir())


def test_unknown_runtime():
    with pytest.raises(LasnetError, match="expected one of onnxruntime, openvino"):
        baselines.check_available(["tensorrt"])
