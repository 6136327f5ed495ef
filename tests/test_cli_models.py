"""The model commands of the CLI: convert, run, masks, and their one-line errors."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from lasnet_tvm.checkpoint import save_checkpoint
from lasnet_tvm.cli.main import cli
from lasnet_tvm.models import build_model
from model_utils import randomize_


@pytest.fixture()
def model_pt(tmp_path):
    model = randomize_(build_model("las_resnet50", "4-4-2-1", 64, 6, 0.25), seed=3)
    return save_checkpoint(tmp_path / "model.pt", model), model


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_version_and_help():
    res = invoke("--version")
    assert res.exit_code == 0 and "lasnet-tvm, version" in res.output
    res = invoke("--help")
    for name in ("convert", "masks", "run"):
        assert name in res.output


def test_run_writes_logits_and_masks(tmp_path, model_pt):
    path, model = model_pt
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    res = invoke("run", path, "--input", tmp_path / "x.npy", "-o", tmp_path / "logits.npy", "--masks", tmp_path / "m.npz")
    assert res.exit_code == 0, res.output
    logits = np.load(tmp_path / "logits.npy")
    assert logits.dtype == np.float32 and logits.shape == (2, 6)
    with torch.no_grad():
        ref, stats = model(torch.from_numpy(x), return_stats=True)
    np.testing.assert_allclose(logits, ref.numpy(), rtol=1e-5, atol=1e-5)
    masks = np.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(masks["layer1.0"], stats["masks"][0][:, 0].bool().numpy())
    np.testing.assert_allclose(masks["rates"], stats["rates"].numpy())


def test_run_errors_are_one_line(tmp_path, model_pt):
    path, _ = model_pt
    np.save(tmp_path / "bad.npy", np.zeros((1, 3, 32, 32), np.float32))
    res = invoke("run", path, "--input", tmp_path / "bad.npy", "-o", tmp_path / "l.npy")
    assert res.exit_code != 0 and "takes 64x64 images" in res.output
    res = invoke("run", tmp_path / "nope.pt", "--input", tmp_path / "bad.npy", "-o", tmp_path / "l.npy")
    assert res.exit_code != 0 and "nope.pt: no such file" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def test_convert_command(tmp_path):
    model = randomize_(build_model("las_resnet50", "4-4-2-1", 64, 6, 0.25))
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, tmp_path / "off.pth")
    res = invoke("convert", tmp_path / "off.pth", "--arch", "las_resnet50", "-g", "4-4-2-1",
                 "--input-size", 64, "-o", tmp_path / "model.pt")
    assert res.exit_code == 0, res.output
    assert "4-4-2-1" in res.output and "6 classes" in res.output
    res = invoke("convert", tmp_path / "off.pth", "--arch", "las_resnet50", "-g", "4-4-2",
                 "--input-size", 64, "-o", tmp_path / "model2.pt")
    assert res.exit_code != 0 and "expected 1, 4 (per stage) or 16 (per block) values" in res.output
    assert not (tmp_path / "model2.pt").exists()


def test_masks_command(tmp_path, model_pt):
    path, _ = model_pt
    rgb = (np.random.default_rng(1).random((80, 100, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "img.png")
    res = invoke("masks", path, tmp_path / "img.png", "-o", tmp_path / "masks.png")
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "masks.png").size[0] > 100
    res = invoke("masks", path, tmp_path / "model.pt", "-o", tmp_path / "m2.png")
    assert res.exit_code != 0 and "not an image" in res.output
