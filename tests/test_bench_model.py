"""``bench model``: every variant it times matches its reference for the four backbones, and a wrong baseline
stops the benchmark with an error naming it. The compiled variants of ResNet-50 are checked in
tests/test_bench.py (``test_bench_model_quick``); the other backbones' compilations are ``slow``."""

from __future__ import annotations

import pytest
import torch

from _bench import BACKBONES, INPUT_SIZE, WIDTH
from lasnet_tvm.benchmarks import model as bm
from lasnet_tvm.benchmarks.block import TOLERANCE
from lasnet_tvm.errors import LasnetError
from lasnet_tvm.models import build_model
from lasnet_tvm.models.sparse import SparseLASNet


def _setup(arch, rate=0.5):
    torch.manual_seed(0)
    model = build_model(arch, "4-4-2-1", INPUT_SIZE, 10, WIDTH).eval()
    with torch.no_grad():  # random BN statistics, so that a wrong baseline shows in the logits
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    x = bm.images(1, INPUT_SIZE)
    bm.calibrate_maskers(model, x, rate)
    return model, x


@pytest.mark.parametrize("arch", BACKBONES)
def test_torch_baselines_match_the_reference(arch):
    model, x = _setup(arch)
    static = model.static_counterpart()
    with torch.no_grad():
        fake = {"las": model(x).numpy(), "static": static(x).numpy()}  # compiled: see tests/test_bench.py
    errs = bm.check_outputs(model, static, SparseLASNet(model), x, fake)
    assert set(errs) == {"las", "static", "torch_static", "torch_sparse"}
    assert max(errs.values()) < TOLERANCE
    with torch.no_grad():  # the maskers were at work: the static model differs from the LAS model
        assert bm.rel_err(static(x), model(x)) > 100 * TOLERANCE


def test_a_static_baseline_without_se_stops_the_benchmark():
    model, x = _setup("las_regnety_400mf")
    static = model.static_counterpart()
    for block in static.blocks:
        block.f.se = None  # the RegNetY layout keeps SE under f
    with torch.no_grad():
        fake = {"las": model(x).numpy(), "static": static(x).numpy()}
    with pytest.raises(LasnetError, match=r"^bench model: torch_static differs from the PyTorch reference"):
        bm.check_outputs(model, static, SparseLASNet(model), x, fake)


def test_a_wrong_compiled_model_stops_the_benchmark():
    model, x = _setup("las_resnet50")
    static = model.static_counterpart()
    with torch.no_grad():
        fake = {"las": model(x).numpy() + 0.1, "static": static(x).numpy()}
    with pytest.raises(LasnetError, match=r"las differs from the PyTorch reference \(max rel err"):
        bm.check_outputs(model, static, SparseLASNet(model), x, fake)


@pytest.mark.slow
@pytest.mark.parametrize("arch", BACKBONES[1:])
def test_bench_model_compiled(arch):
    res = bm.run(arch, "4-4-2-1", INPUT_SIZE, WIDTH, 0.5, n_images=1, repeats=1)
    assert set(res["max_rel_err"]) == {"las", "static", "torch_static", "torch_sparse"}
    assert set(res["ms"]) == set(res["max_rel_err"]) | {"torch_las_dense"}
    assert max(res["max_rel_err"].values()) < TOLERANCE
