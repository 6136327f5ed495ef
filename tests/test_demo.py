"""The demo pipeline (train -> compile -> verify -> time) on a tiny model."""

import math

from click.testing import CliRunner

from lasnet_tvm.checkpoint import save_checkpoint
from lasnet_tvm.cli.main import cli
from lasnet_tvm.demo import run_demo
from lasnet_tvm.models import build_model
from model_utils import randomize_


def test_run_demo_compiles_checks_and_times(tmp_path):
    model = randomize_(build_model("las_resnet50", "4-4-2-1", 64, 4, 0.125), seed=1)
    path = save_checkpoint(tmp_path / "model.pt", model)
    r = run_demo(path, images=2, repeats=1)
    assert r.max_rel_err < 1e-4
    assert 0.0 <= r.accuracy <= 1.0 and 0.0 <= r.rate <= 1.0
    for ms in (r.las_ms, r.static_ms, r.torch_static_ms):
        assert ms > 0 and math.isfinite(ms)
    assert r.speedup_vs_static == r.static_ms / r.las_ms
    assert "speedup of the LAS model" in r.summary()


def test_demo_command_on_a_given_model(tmp_path):
    model = randomize_(build_model("las_resnet50", "4-4-2-1", 64, 4, 0.125), seed=2)
    path = save_checkpoint(tmp_path / "model.pt", model)
    res = CliRunner().invoke(cli, ["demo", "--model", str(path), "--images", "1", "--repeats", "1"])
    assert res.exit_code == 0, res.output
    assert "compiled LAS model matches PyTorch" in res.output
