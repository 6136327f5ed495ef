"""``bench block``: every variant it times, PyTorch's and the compiled ones, matches the reference on every stage
of the four backbones, and a wrong baseline stops the benchmark with an error naming it."""

from __future__ import annotations

import pytest
import torch

from _bench import CASES, shared_kernels, stage_block  # noqa: F401  (shared_kernels: autouse fixture)
from lasnet_tvm.benchmarks import block as B
from lasnet_tvm.block_plan import Fusion
from lasnet_tvm.errors import LasnetError
from lasnet_tvm.models.folded import dense_masked_block, sparse_block, static_block
from lasnet_tvm.models.synthetic import input_at_rate, random_folded_block

RATES = (0.25, 1.0)


@pytest.mark.parametrize("arch, stage", CASES)
def test_torch_baselines_match_the_reference(arch, stage):
    spec = stage_block(arch, stage)
    fb = random_folded_block(spec, seed=stage)
    assert (fb.se is not None) == ("regnety" in arch)  # RegNetY blocks have SE, ResNet blocks none
    ones = torch.ones(1, spec.grid, spec.grid, dtype=torch.bool)
    x, _ = input_at_rate(spec, 1.0, seed=stage)
    with torch.no_grad():
        ref = dense_masked_block(fb, x[None], ones)
        assert B.rel_err(static_block(fb, x[None]), ref) < B.TOLERANCE
        for r in (0.0, *RATES):
            x, want = input_at_rate(spec, r, seed=stage + 1)
            out, mask = sparse_block(fb, x[None], want[None])
            assert torch.equal(mask[0], want)
            assert B.rel_err(out, dense_masked_block(fb, x[None], want[None])) < B.TOLERANCE


@pytest.mark.parametrize("arch, stage", CASES)
def test_bench_block_checks_every_variant(arch, stage):
    spec = stage_block(arch, stage)
    res = B.run(spec, RATES, repeats=1, ablation_rate=0.5, log=lambda m: None)
    errs = res["max_rel_err"]
    want = {"static", "torch_static", *(f"all@{r}" for r in RATES), *(f"torch_sparse@{r}" for r in (*RATES, 0.5)),
            *(f"{f}@0.5" for f in Fusion.values())}
    assert set(errs) == want and set(errs) == set(res["timings"])  # every timed variant was checked
    assert max(errs.values()) < B.TOLERANCE
    assert res["torch_static_ms"] > 0 and all(r["torch_sparse_ms"] > 0 for r in res["rates"])


def _without_se(fb, x):
    """The static block as it would be without the squeeze-excitation."""
    from dataclasses import replace

    return static_block(replace(fb, se=None), x)


def test_a_wrong_baseline_stops_the_benchmark(monkeypatch):
    spec = stage_block("las_regnety_400mf", 2)
    monkeypatch.setattr(B, "static_block", _without_se)
    with pytest.raises(LasnetError, match=r"torch_static differs from the PyTorch reference \(max rel err") as e:
        B.run(spec, (1.0,), repeats=1, ablation_rate=0.5, log=lambda m: None)
    assert "\n" not in str(e.value)


def test_a_wrong_compiled_block_stops_the_benchmark():
    from lasnet_tvm.block_runtime import CompiledBlock

    spec = stage_block("las_resnet50", 3)
    for static in (True, False):
        blk = CompiledBlock.build(random_folded_block(spec), "llvm", static=static)
        blk.fb.b3 = blk.fb.b3 + 1.0  # the reference changes, the compiled weights do not
        with pytest.raises(LasnetError, match=f"block {spec.name}.* differs from the PyTorch reference"):
            B.checked_static(blk) if static else B.checked_dynamic(blk, 1.0)
