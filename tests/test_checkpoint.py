"""model.pt format, loading errors, and conversion of official LASNet checkpoints."""

import os
import pickle

import pytest
import torch

from lasnet_tvm.checkpoint import convert_official, load_checkpoint, read_checkpoint, save_checkpoint
from lasnet_tvm.errors import LasnetError
from lasnet_tvm.models import build_model
from model_utils import randomize_
from official_layout import regnet_forward, resnet_forward


def _official_checkpoint(tmp_path, arch, gran, size, width_mult=1.0, num_classes=10, seed=0, wrap=True):
    """A checkpoint as the official training script saves it: DDP 'module.' keys inside a dict."""
    model = randomize_(build_model(arch, gran, size, num_classes, width_mult, se_pool="dense"), seed=seed)
    sd = model.state_dict()
    path = tmp_path / "official.pth.tar"
    if wrap:
        torch.save({"epoch": 99, "state_dict": {"module." + k: v for k, v in sd.items()}, "best_acc1": 0.7}, path)
    else:
        torch.save(sd, path)
    return path, sd


@pytest.mark.parametrize(
    "arch,gran,size,width",
    [
        ("las_resnet50", "4-4-2-1", 64, 0.25),
        ("las_resnet101", "8-4-7-1", 224, 0.125),
        ("las_regnety_400mf", "4-4-2-1", 64, 1.0),
        ("las_regnety_800mf", "4-4-7-1", 224, 1.0),
    ],
)
@pytest.mark.parametrize("wrap", [True, False])
def test_convert_matches_official_forward(tmp_path, arch, gran, size, width, wrap):
    path, sd = _official_checkpoint(tmp_path, arch, gran, size, width, wrap=wrap)
    model = convert_official(path, arch, gran, input_size=size)
    assert model.spec.width_mult == width and model.spec.num_classes == 10
    x = torch.randn(2, 3, size, size)
    official = resnet_forward if arch.startswith("las_resnet") else regnet_forward
    with torch.no_grad():
        ref_logits, ref_masks = official(sd, model.spec.granularity, size, x)
        logits, stats = model(x, return_stats=True)
    for ours, theirs in zip(stats["masks"], ref_masks):
        assert torch.equal(ours, theirs)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4 * ref_logits.abs().max().item())
    # and the round trip through model.pt keeps everything
    out = save_checkpoint(tmp_path / "model.pt", model)
    again, ckpt = load_checkpoint(out)
    assert ckpt["arch"] == arch and again.se_pool == model.se_pool
    with torch.no_grad():
        torch.testing.assert_close(again(x), logits)


def test_convert_rejects_wrong_arch_and_granularity(tmp_path):
    path, _ = _official_checkpoint(tmp_path, "las_resnet50", "4-4-2-1", 64, 0.25)
    with pytest.raises(LasnetError, match="weights do not fit las_resnet101"):
        convert_official(path, "las_resnet101", "4-4-2-1", input_size=64)
    with pytest.raises(LasnetError, match="no fc.weight|no trunk_output"):
        convert_official(path, "las_regnety_400mf", "4-4-2-1", input_size=64)
    with pytest.raises(LasnetError, match="does not divide"):
        convert_official(path, "las_resnet50", "3-3-3-1", input_size=64)


def test_model_pt_loads_weights_only_and_checks_arch(tmp_path):
    model = randomize_(build_model("las_resnet50", "4-4-2-1", 64, 5, 0.25))
    path = save_checkpoint(tmp_path / "m.pt", model, {"epochs": 3, "acc": 0.5})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "lasnet-tvm/model" and raw["meta"] == {"epochs": 3, "acc": 0.5}
    assert raw["granularity"] == [4] * 3 + [4] * 4 + [2] * 6 + [1] * 3
    with pytest.raises(LasnetError, match="is las_resnet50, not las_resnet101"):
        load_checkpoint(path, arch="las_resnet101")
    with pytest.raises(LasnetError, match="has granularity 4-4-2-1, not 8-4-2-1"):
        load_checkpoint(path, granularity="8-4-2-1")
    model2, _ = load_checkpoint(path, arch="las_resnet50", granularity="4-4-2-1")
    assert not model2.training


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_bad_files_give_one_line_errors(tmp_path):
    with pytest.raises(LasnetError, match="no such file"):
        read_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(LasnetError, match="not a PyTorch checkpoint"):
        read_checkpoint(junk)
    evil = tmp_path / "evil.pt"
    torch.save({"format": "lasnet-tvm/model", "payload": _Evil()}, evil, pickle_module=pickle)
    with pytest.raises(LasnetError, match="could run code"):
        read_checkpoint(evil)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(LasnetError, match="not a lasnet-tvm model.pt"):
        read_checkpoint(other)
    for err in (LasnetError,):
        with pytest.raises(err) as info:
            read_checkpoint(junk)
        assert "\n" not in str(info.value)


def test_failed_save_keeps_previous_file(tmp_path, monkeypatch):
    model = build_model("las_resnet50", "4-4-2-1", 64, 5, 0.25)
    path = save_checkpoint(tmp_path / "m.pt", model, {"v": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(LasnetError, match="m.pt: cannot write the checkpoint \\(disk full\\)"):
        save_checkpoint(path, model, {"v": 2})
    monkeypatch.undo()
    assert read_checkpoint(path)["meta"] == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temporary file left behind
