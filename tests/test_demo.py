"""The demo pipeline (train -> compile -> verify -> masks -> time -> demo.json)."""

import json
import math

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from lasnet_tvm.checkpoint import load_checkpoint, save_checkpoint
from lasnet_tvm.cli.main import cli
from lasnet_tvm.demo import DEMO_TRAIN, mask_on_object, run_demo, train_demo_model
from lasnet_tvm.errors import LasnetError
from lasnet_tvm.models import build_model
from lasnet_tvm.train.data import DiscPairs
from lasnet_tvm.train.trainer import TrainConfig, train
from model_utils import randomize_

KEYS = ("accuracy", "chance", "speedup_vs_static", "max_rel_err", "las_ms", "static_ms", "torch_ms", "rate",
        "images", "repeats", "compile_s", "train_s", "machine", "versions", "date", "mask_on_object",
        "object_area", "mask_on_object_per_stage")


def _small_model(tmp_path, seed=1, meta=None):
    model = randomize_(build_model("las_resnet50", "4-4-2-1", 64, 4, 0.125, depths=(1, 1, 1, 1)), seed=seed)
    return save_checkpoint(tmp_path / "model.pt", model, meta)


def test_run_demo_compiles_checks_draws_and_records(tmp_path):
    path = _small_model(tmp_path, meta={"dataset": "pairs", "seed": 3})
    r = run_demo(path, images=2, repeats=2, held_out=6, workdir=tmp_path / "work")
    assert r.max_rel_err < 1e-4
    assert r.held_out == 6 and r.chance == 0.25
    assert 0.0 <= r.accuracy <= 1.0 and 0.0 <= r.rate <= 1.0 and 0.0 <= r.mask_on_object <= 1.0
    assert len(r.mask_on_object_per_stage) == 4 and all(0.0 <= v <= 1.0 for v in r.mask_on_object_per_stage)
    for ms in (r.las_ms, r.static_ms, r.torch_ms):
        assert ms > 0 and math.isfinite(ms)
    assert r.speedup_vs_static == pytest.approx(r.static_ms / r.las_ms)
    with Image.open(tmp_path / "work" / "masks.png") as im:
        im.verify()
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 300
    rec = json.loads((tmp_path / "work" / "demo.json").read_text())
    assert all(k in rec for k in KEYS)
    assert rec["accuracy"] == r.accuracy and rec["max_rel_err"] == r.max_rel_err
    assert rec["speedup_vs_static"] == pytest.approx(rec["static_ms"] / rec["las_ms"])
    assert rec["images"] == 2 and rec["repeats"] == 2 and set(rec["compile_s"]) == {"las", "static"}
    assert "speedup over static" in r.summary()


def test_mask_on_object_measures_where_the_mask_is():
    """A model whose masks are all on scores the objects' share of the image; all off scores 0."""
    data = DiscPairs(6, 64, 4, seed=0, split="val")
    x = torch.stack([data[i][0] for i in range(6)])
    on = randomize_(build_model("las_resnet50", "4-4-2-1", 64, 4, 0.125, depths=(1, 1, 1, 1)), masker_bias=1.0,
                    force=True)
    share, area, stages = mask_on_object(on, x, data.objects)
    assert share == pytest.approx(area, abs=1e-6) and 0.05 < area < 0.2
    assert stages == pytest.approx([area] * 4, abs=1e-6)
    off = randomize_(on, masker_bias=-1.0, force=True)
    share, _, stages = mask_on_object(off, x, data.objects)
    assert share == 0.0 and stages == [0.0] * 4


def test_demo_command_on_a_given_model(tmp_path):
    path = _small_model(tmp_path, seed=2)
    work = tmp_path / "work"
    res = CliRunner().invoke(cli, ["demo", "--model", str(path), "--workdir", str(work), "--images", "1",
                                   "--repeats", "1", "--held-out", "5"])
    assert res.exit_code == 0, res.output
    assert "max rel. logit error vs PyTorch" in res.output and (work / "masks.png").is_file()
    assert json.loads((work / "demo.json").read_text())["held_out"] == 5


def test_demo_refuses_a_model_of_unknown_data(tmp_path):
    path = _small_model(tmp_path, meta={"dataset": "folder", "data": "my_images (10/2 images)"})
    with pytest.raises(LasnetError, match="my_images"):
        run_demo(path, images=1, repeats=1, held_out=1)


def test_demo_training_config_learns_and_computes_on_the_discs(tmp_path):
    """The demo's own training run: far above chance on held-out images, with the masks' active area at least
    twice as much on the disc pairs as a mask blind to them would be."""
    cfg = {**DEMO_TRAIN, "val_size": 200}
    r = train(TrainConfig(output=str(tmp_path / "m.pt"), progress=False, threads=2, **cfg))
    assert r.accuracy >= 1.0 / cfg["num_classes"] + 0.5, r.history
    assert r.rate < 0.5
    model, _ = load_checkpoint(r.output)
    data = DiscPairs(100, cfg["input_size"], cfg["num_classes"], seed=cfg.get("seed", 0), split="val")
    x = torch.stack([data[i][0] for i in range(len(data))])
    share, area, _ = mask_on_object(model, x, data.objects)
    assert share >= 2 * area, (share, area)


@pytest.mark.slow
def test_demo_model_learns_and_matches_pytorch(tmp_path):
    """The real demo: its trained model is far above chance, computes on the discs and its compiled form equals
    PyTorch."""
    r = train_demo_model(tmp_path / "demo_model.pt", progress=False)
    d = run_demo(r.output, images=2, repeats=3, held_out=200, workdir=tmp_path)
    assert d.accuracy >= d.chance + 0.5 and d.max_rel_err < 1e-4
    assert 0.0 < d.rate < 0.5 and d.mask_on_object >= 2 * d.object_area
