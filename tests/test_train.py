"""The LASNet losses and schedules (against hand computations), the training loop, resume and the CLI."""


import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lasnet_tvm.checkpoint import load_checkpoint
from lasnet_tvm.errors import LasnetError
from lasnet_tvm.models import build_model
from lasnet_tvm.train.data import SyntheticShapes
from lasnet_tvm.train.losses import (
    LossWeights,
    bounds_loss,
    cosine_lr,
    flops_loss,
    gumbel_temperature,
    kd_loss,
    lasnet_loss,
    rate_bounds,
)
from lasnet_tvm.train.trainer import TrainConfig, load_init_weights, state_path_for, train


# -- schedules -------------------------------------------------------------------------------------------------
def test_temperature_schedule_endpoints_and_decay():
    total = 50
    taus = [gumbel_temperature(i, total) for i in range(total)]
    assert taus[0] == pytest.approx(5.0) and taus[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(taus, taus[1:]))
    ratios = [b / a for a, b in zip(taus, taus[1:])]  # exponential: constant ratio 0.02 ** (1 / 49)
    assert np.allclose(ratios, 0.02 ** (1 / 49))


def test_cosine_lr():
    assert cosine_lr(0.2, 0, 100) == pytest.approx(0.2)
    assert cosine_lr(0.2, 50, 100) == pytest.approx(0.1)
    assert cosine_lr(0.2, 100, 100) == pytest.approx(0.0, abs=1e-12)


def test_cosine_lr_with_linear_warmup():
    assert [cosine_lr(0.2, i, 110, warmup=10) for i in range(10)] == pytest.approx([0.02 * (i + 1) for i in range(10)])
    assert cosine_lr(0.2, 10, 110, warmup=10) == pytest.approx(0.2)
    assert cosine_lr(0.2, 60, 110, warmup=10) == pytest.approx(0.1)


def test_rate_bounds_relax_from_target_to_unit_interval():
    assert rate_bounds(0, 30, 0.4) == pytest.approx((0.4, 0.4))
    assert rate_bounds(10, 30, 0.4) == pytest.approx((0.0, 1.0), abs=1e-12)
    assert rate_bounds(25, 30, 0.4) == pytest.approx((0.0, 1.0), abs=1e-12)
    # halfway to a third of training: cos^2(pi / 4) = 0.5 of the way
    assert rate_bounds(5, 30, 0.4) == pytest.approx((0.2, 0.7))


# -- loss terms ------------------------------------------------------------------------------------------------
def test_flops_and_bounds_loss_by_hand():
    assert float(flops_loss(torch.tensor([100.0, 300.0]), 400.0, 0.4)) == pytest.approx((200 / 400 - 0.4) ** 2)
    ratio = torch.tensor([0.2, 0.5, 0.9])
    assert float(bounds_loss(ratio, 0.3, 0.8)) == pytest.approx((0.1**2 + 0.0 + 0.1**2) / 3)


def test_kd_loss_by_hand():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    T = 4.0
    ps = np.exp(s.numpy() / T) / np.exp(s.numpy() / T).sum(1, keepdims=True)
    pt = np.exp(t.numpy() / T) / np.exp(t.numpy() / T).sum(1, keepdims=True)
    want = (pt * (np.log(pt) - np.log(ps))).sum() / 4 * T * T
    assert float(kd_loss(s, t, T)) == pytest.approx(want, rel=1e-5)
    assert float(kd_loss(s, s, T)) == pytest.approx(0.0, abs=1e-6)


def test_lasnet_loss_combines_terms():
    g = torch.Generator().manual_seed(1)
    logits, teacher = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    labels = torch.tensor([0, 2])
    stats = {"flops": torch.tensor([600.0, 200.0]), "block_flops": torch.tensor([[10.0, 80.0], [30.0, 40.0]])}
    block_static = torch.tensor([100.0, 100.0])  # block ratios 0.2 and 0.6
    w = LossWeights(alpha=10.0, beta=0.5, kd_temperature=4.0)
    loss, terms = lasnet_loss(logits, labels, stats, block_static, 1000.0, 0.5, (0.3, 0.5), teacher, w)
    logp = torch.log_softmax(logits, 1)
    ce = -(logp[0, 0] + logp[1, 2]).item() / 2
    l_flops = (400 / 1000 - 0.5) ** 2
    l_bounds = (0.1**2 + 0.1**2) / 2
    kd = float(kd_loss(logits, teacher, 4.0))
    assert terms["ce"] == pytest.approx(ce, rel=1e-6)
    assert terms["flops"] == pytest.approx(l_flops) and terms["bounds"] == pytest.approx(l_bounds)
    assert float(loss) == pytest.approx(ce + 10 * (l_flops + l_bounds) + 0.5 * kd, rel=1e-6)
    no_kd, t2 = lasnet_loss(logits, labels, stats, block_static, 1000.0, 0.5, (0.3, 0.5), None, w)
    assert float(no_kd) == pytest.approx(ce + 10 * (l_flops + l_bounds), rel=1e-6) and t2["kd"] == 0.0


# -- init weights ----------------------------------------------------------------------------------------------
def test_init_from_torchvision_state_dict(tmp_path):
    src = build_model("las_resnet50", 1, 64, num_classes=7, width_mult=0.125, static=True)
    state = {"module." + k: v for k, v in src.state_dict().items() if "masker" not in k}
    path = tmp_path / "resnet50.pth"
    torch.save(state, path)
    model = build_model("las_resnet50", "4-4-2-1", 64, num_classes=3, width_mult=0.125)
    masker_before = model.layer1[0].masker.conv2.bias.clone()
    missing, unexpected = load_init_weights(model, path)
    assert sorted(missing) == ["fc.bias", "fc.weight"]  # other shape: skipped and reported
    assert sorted(unexpected) == ["fc.bias", "fc.weight"]  # named after stripping "module."
    assert torch.equal(model.layer2[1].conv2.weight, src.layer2[1].conv2.weight)
    assert torch.equal(model.layer1[0].masker.conv2.bias, masker_before)
    with pytest.raises(LasnetError, match="no weight fits"):
        load_init_weights(build_model("las_regnety_400mf", 1, 64, 3, 0.25), path)


# -- training runs ---------------------------------------------------------------------------------------------
def _cfg(out, **kw):
    base = dict(output=str(out), arch="las_resnet50", granularity="4-4-2-1", width_mult=0.125, input_size=64,
                num_classes=4, train_size=32, val_size=16, batch_size=16, epochs=2, lr=0.05, progress=False,
                threads=2, seed=5)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "model.pt"
    return train(_cfg(out)), out


def test_training_writes_loadable_model_with_metrics(straight_run):
    result, out = straight_run
    model, ckpt = load_checkpoint(out, arch="las_resnet50", granularity="4-4-2-1")
    meta = ckpt["meta"]
    assert meta["epochs"] == 2 and meta["target"] == 0.5 and "synthetic" in meta["data"]
    assert meta["accuracy"] == pytest.approx(result.accuracy) and meta["flops_ratio"] == pytest.approx(result.flops_ratio)
    assert len(meta["rate_per_block"]) == 16 and meta["time_s"] >= 0
    # Independent re-evaluation of the written model on the same validation set.
    val = SyntheticShapes(16, 64, 4, seed=5, split="val")
    correct, rates, flops = 0, [], []
    with torch.no_grad():
        for i in range(len(val)):
            x, y = val[i]
            logits, stats = model(x[None], return_stats=True)
            correct += int(logits.argmax(1).item() == y)
            rates.append(stats["rates"][0])
            flops.append(float(stats["flops"][0]))
    assert meta["accuracy"] == pytest.approx(correct / 16)
    assert meta["rate"] == pytest.approx(float(torch.stack(rates).mean()), abs=1e-5)
    assert meta["flops_ratio"] == pytest.approx(np.mean(flops) / model.static_flops(), rel=1e-5)
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert result.history[-1]["temperature"] == pytest.approx(0.1)


class _Interrupt(Exception):
    pass


def _stop_after_first(entry):
    if entry["epoch"] == 1:
        raise _Interrupt


def test_resume_continues_and_matches_a_straight_run(straight_run, tmp_path):
    """Interrupt a run after epoch 1, resume it with the CLI: same weights as the uninterrupted run."""
    result, straight_out = straight_run
    out = tmp_path / "model.pt"
    with pytest.raises(_Interrupt):
        train(_cfg(out), on_epoch_end=_stop_after_first)
    assert not out.exists() and torch.load(state_path_for(out), weights_only=True)["epoch"] == 1
    from lasnet_tvm.cli.train import train as train_cmd

    args = ["--arch", "las_resnet50", "--granularity", "4-4-2-1", "--width-mult", "0.125", "--input-size", "64",
            "--num-classes", "4", "--train-size", "32", "--val-size", "16", "--batch-size", "16", "--epochs", "2",
            "--lr", "0.05", "--seed", "5", "--threads", "2", "--no-progress", "--resume", "-o", str(out)]
    cli = CliRunner().invoke(train_cmd, args)
    assert cli.exit_code == 0, cli.output
    assert "resumed after epoch 1" in cli.output and "accuracy" in cli.output
    resumed, ckpt = load_checkpoint(out)
    straight, ref = load_checkpoint(straight_out)
    for (k, a), b in zip(resumed.state_dict().items(), straight.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), k
    assert ckpt["meta"]["accuracy"] == pytest.approx(ref["meta"]["accuracy"])
    assert torch.load(state_path_for(out), weights_only=True)["epoch"] == 2


def test_resume_refuses_another_arch_or_granularity(tmp_path):
    out = tmp_path / "model.pt"
    train(_cfg(out, epochs=1, train_size=16, val_size=8))
    with pytest.raises(LasnetError, match="granularity"):
        train(_cfg(out, granularity="2-2-1-1", resume=True))
    with pytest.raises(LasnetError, match="arch"):
        train(_cfg(out, arch="las_regnety_400mf", resume=True))
    with pytest.raises(LasnetError, match="depths"):
        train(_cfg(out, depths=(1, 1, 1, 1), resume=True))
    with pytest.raises(LasnetError, match="no training state"):
        train(_cfg(tmp_path / "other.pt", resume=True))


def test_failed_run_keeps_earlier_model(tmp_path):
    out = tmp_path / "model.pt"
    out.write_bytes(b"earlier model")
    with pytest.raises(LasnetError, match="missing_folder"):
        train(_cfg(out, data=str(tmp_path / "missing_folder")))
    assert out.read_bytes() == b"earlier model"


def test_shallow_depths_train_save_and_load(tmp_path):
    """A model with configured depths trains, and its checkpoint (weights_only) rebuilds the same network."""
    out = tmp_path / "model.pt"
    r = train(_cfg(out, depths=(1, 2, 1, 1), epochs=1, train_size=16, val_size=8, warmup_epochs=0.5,
                   data="clutter"))
    assert len(r.rate_per_block) == 5
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["depths"] == [1, 2, 1, 1] and ckpt["meta"]["dataset"] == "clutter"
    model, _ = load_checkpoint(out, granularity="4-4-2-1")
    assert model.spec.depths == (1, 2, 1, 1) and [b.spec.name for b in model.blocks] == [
        "layer1.0", "layer2.0", "layer2.1", "layer3.0", "layer4.0"]
    with pytest.raises(LasnetError, match="depths"):
        build_model("las_resnet50", 1, 64, 4, 0.125, depths=(1, 0, 1, 1))
    with pytest.raises(LasnetError, match="warm-up"):
        train(_cfg(out, warmup_epochs=2))


def test_checkpoint_without_depths_gets_the_backbone_depths(tmp_path):
    from lasnet_tvm.checkpoint import save_checkpoint

    path = save_checkpoint(tmp_path / "m.pt", build_model("las_resnet50", "4-4-2-1", 64, 4, 0.125))
    ckpt = torch.load(path, weights_only=True)
    del ckpt["depths"]
    torch.save(ckpt, path)
    model, _ = load_checkpoint(path)
    assert model.spec.depths == (3, 4, 6, 3)
