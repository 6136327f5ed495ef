"""``bench fusion``, ``bench rate`` and ``bench granularity``: every variant they time (the static block and the
dynamic block in each fusion) matches PyTorch on every stage of the four backbones; the runs themselves check."""

from __future__ import annotations

import pytest

from _bench import BACKBONES, CASES, STAGES, shared_kernels, stage_block  # noqa: F401  (autouse fixture)
from lasnet_tvm.benchmarks import fusion, granularity, rate
from lasnet_tvm.benchmarks.block import TOLERANCE
from lasnet_tvm.block_plan import Fusion
from lasnet_tvm.predictor.profiles import resolve_profile

HW = resolve_profile("xeon-6248", None)
FAST = dict(repeats=1, kernel_repeat=1, min_repeat_ms=0)


def _quiet(msg):
    pass


@pytest.mark.parametrize("arch, stage", CASES)
def test_bench_fusion_checks_every_variant(arch, stage):
    spec = stage_block(arch, stage)
    res = fusion.run(spec, [spec.S], (0.5, 1.0), HW, "llvm", log=_quiet, **FAST)
    errs = res["max_rel_err"]
    assert set(errs) == {"static"} | {f"{f}/S{spec.S}@{r}" for f in Fusion.values() for r in (0.5, 1.0)}
    assert max(errs.values()) < TOLERANCE
    for case in res["cases"]:
        assert [v["variant"] for v in case["variants"]] == ["static", *Fusion.values()]


@pytest.mark.parametrize("arch", BACKBONES)
def test_bench_rate_and_granularity_check_every_stage(arch):
    blocks = [stage_block(arch, s) for s in STAGES]
    S_lists = [[b.S] for b in blocks]
    for bench in (rate, granularity):
        extra = {"tolerance": 0.05} if bench is granularity else {}
        res = bench.run(blocks, S_lists, (0.0, 0.5, 1.0), HW, "llvm", log=_quiet, **FAST, **extra)
        assert [st["block"]["block"] for st in res["stages"]] == [b.name for b in blocks]
        assert len(res["points"]) == 3 * len(blocks) and not res["excluded"]
        assert res["max_rel_err"] < TOLERANCE
