"""``lasnet-tvm bench masker``: the masker placement (:class:`~lasnet_tvm.block_plan.MaskerPlacement`) the
predictor chooses against the measured best, per block and activation rate.

For every measured block (by default the first block and the first identity block of each stage) both
placements of the fully fused dynamic block are compiled (one symbolic-``P`` build each serves every rate), every
(placement, rate) variant is checked against PyTorch on its own input
(:func:`~lasnet_tvm.benchmarks.block.checked_dynamic`), and then all variants of the block are timed in one
interleaved, call-by-call run (:func:`~lasnet_tvm.timing.time_interleaved`, medians of full block calls). The
analytic model prices each placement at the same rate (:func:`lasnet_tvm.predictor.predict_block`); the predicted
choice is the cheaper one, ties going to ``fused`` as in :func:`lasnet_tvm.predictor.search.choose_masker`. Each
(block, rate) row holds how much slower the predicted choice measured than the measured best (``regret``) and
whether that is at most 5 % (``within_5pct``); ``agreement`` sums the rows overall and per stage.
"""

from __future__ import annotations

from dataclasses import replace

from ..archs import BlockSpec
from ..block_plan import MaskerPlacement
from ..block_runtime import CompiledBlock
from ..errors import LasnetError
from ..models.synthetic import random_folded_block
from ..predictor import predict_block
from ..timing import time_interleaved
from .block import checked_dynamic, shape_of, sync_of
from .rate import format_excluded

PLACEMENTS = MaskerPlacement.values()  # fused first: it wins a predicted tie
WITHIN = 0.05  # a predicted choice measuring at most 5 % slower than the measured best counts as right
GOAL = 0.8  # share of (block, rate) cases the predictor is held to
DEFAULT_S = (4, 4, 2, 1)  # per stage, the backbones' default granularity
DEFAULT_RATES = (0.1, 0.25, 0.5)


def measured_blocks(blocks: list[BlockSpec], stages) -> list[BlockSpec]:
    """Per stage in ``stages``, its first block (the downsample one) and its first identity block, in order."""
    out = []
    for stage in stages:
        in_stage = [b for b in blocks if b.stage == stage]
        if not in_stage:
            raise LasnetError(f"stage {stage} does not exist (1..4)")
        plain = [b for b in in_stage[1:] if not b.downsample]
        out += in_stage[:1] + plain[:1]
    return out


def with_S(blocks: list[BlockSpec], S_of_stage: dict[int, int]) -> list[BlockSpec]:
    """``blocks`` at their stage's granularity.

    Raises
    ------
    LasnetError
        An S exceeds the output size of a block of its stage.
    """
    out = []
    for b in blocks:
        S = S_of_stage[b.stage]
        if not 1 <= S <= b.out_size:
            raise LasnetError(f"S={S} of stage {b.stage} must be in 1..{b.out_size} (output size of {b.name})")
        out.append(replace(b, S=S))
    return out


def choose(ms: dict[str, float]) -> str:
    """The placement with the lowest time; ties go to the first in :data:`PLACEMENTS` (``fused``)."""
    return min(PLACEMENTS, key=lambda m: ms[m])


def case_row(spec: BlockSpec, rate: float, P: int, measured: dict, predicted: dict) -> dict:
    """One (block, rate) row: measured and predicted ms per placement, the measured best, the predicted choice,
    ``regret`` (measured ms of the predicted choice / measured best - 1) and ``within_5pct``."""
    best, choice = choose(measured), choose(predicted)
    regret = measured[choice] / measured[best] - 1.0
    return {"block": spec.name, "stage": spec.stage, "stride": spec.stride, "downsample": spec.downsample,
            "S": spec.S, "rate": rate, "active_patches": P, "num_patches": spec.num_patches,
            "measured_ms": measured, "predicted_ms": predicted, "measured_best": best, "predicted_choice": choice,
            "agree": best == choice, "regret": regret, "within_5pct": regret <= WITHIN}


def _share(rows: list[dict]) -> dict:
    n = len(rows)
    within = sum(r["within_5pct"] for r in rows)
    exact = sum(r["agree"] for r in rows)
    return {"cases": n, "within_5pct": within, "share": within / n if n else None, "exact": exact,
            "exact_share": exact / n if n else None}


def agreement(rows: list[dict]) -> dict:
    """Over the rows: ``cases``, ``within_5pct`` (rows whose predicted choice measured within 5 % of the best),
    ``share`` (their fraction), ``exact`` / ``exact_share`` (rows where the choice is the measured best),
    ``goal`` (the share required, and whether it is met) and ``per_stage`` (the same counts per stage)."""
    out = _share(rows)
    out["goal"] = {"share": GOAL, "met": out["share"] is not None and out["share"] >= GOAL}
    stages = sorted({r["stage"] for r in rows})
    out["per_stage"] = {str(s): _share([r for r in rows if r["stage"] == s]) for s in stages}
    return out


def measure_block(spec: BlockSpec, rates, hw, target, repeats: int, seed: int = 0, exclude_mismatch: bool = False,
                  log=print) -> dict:
    """Build, check and time both placements of one block at every rate; returns ``block`` (its shape), ``rows``
    (:func:`case_row`, one per rate where both placements were timed), ``excluded``, ``max_rel_err`` and
    ``timings`` (every variant's spread, keyed ``<placement>@<rate>``).

    Raises
    ------
    LasnetError
        (unless ``exclude_mismatch``) a variant's mask or output differs from PyTorch; the message names the block
        and the placement.
    """
    fb = random_folded_block(spec, seed)
    blocks = {m: CompiledBlock.build(fb, target, masker=m) for m in PLACEMENTS}
    sync = sync_of(blocks[PLACEMENTS[0]])
    fns, errs, excluded, active = {}, [], [], {}
    for r in rates:
        for m, blk in blocks.items():
            try:
                x, P, err = checked_dynamic(blk, r, seed + 1)
            except LasnetError as e:
                named = LasnetError(f"masker placement {m}: {e}")
                if not exclude_mismatch:
                    raise named from None
                excluded.append({"block": spec.name, "stage": spec.stage, "S": spec.S, "rate": r, "placement": m,
                                 "error": str(named)})
                continue
            errs.append(err)
            active[r] = P
            fns[f"{m}@{r}"] = (lambda b=blk, x=x: (b(x), sync()))
    log(f"{spec.name} (stage {spec.stage}, stride {spec.stride}, S={spec.S}): {len(fns)} variants match PyTorch; "
        f"timing {repeats} rounds ...")
    t = time_interleaved(fns, repeats, batch=1) if fns else {}
    rows = []
    for r in rates:
        if not all(f"{m}@{r}" in t for m in PLACEMENTS):
            continue
        measured = {m: t[f"{m}@{r}"]["median_ms"] for m in PLACEMENTS}
        predicted = {m: predict_block(spec, hw, r, masker=m).dynamic_s * 1e3 for m in PLACEMENTS}
        rows.append(case_row(spec, r, active[r], measured, predicted))
    return {"block": shape_of(spec), "S": spec.S, "rows": rows, "excluded": excluded,
            "max_rel_err": max(errs) if errs else None, "timings": t}


def run(blocks: list[BlockSpec], rates, hw, target, repeats: int, seed: int = 0, log=print,
        exclude_mismatch: bool = False) -> dict:
    """:func:`measure_block` for every block; returns ``blocks`` (one result each), ``rows`` (all of them),
    ``excluded``, ``agreement`` (:func:`agreement`) and ``max_rel_err``."""
    res = [measure_block(b, rates, hw, target, repeats, seed, exclude_mismatch, log) for b in blocks]
    rows = [row for b in res for row in b["rows"]]
    errs = [b["max_rel_err"] for b in res if b["max_rel_err"] is not None]
    return {"blocks": res, "rows": rows, "excluded": [e for b in res for e in b["excluded"]],
            "agreement": agreement(rows), "within": WITHIN, "max_rel_err": max(errs) if errs else None}


def format_table(res: dict) -> str:
    """Plain-text table: per block and rate the measured and predicted ms of each placement, the measured best,
    the predicted choice and its regret; then the agreement overall and per stage."""
    w = max([len(r["block"]) for r in res["rows"]] + [5])
    lines = [(f"bench masker: {res['arch']} on {res['device']}, profile {res['profile']['name']}, "
              f"{res['repeats']} rounds (median ms)"),
             (f"  {'block':<{w}} {'S':>2} {'rate':>5}  {'meas fused':>10} {'meas sep':>9}  {'pred fused':>10} "
              f"{'pred sep':>9}  {'best':<8} {'choice':<8} {'regret':>7}")]
    for r in res["rows"]:
        m, p = r["measured_ms"], r["predicted_ms"]
        lines.append(f"  {r['block']:<{w}} {r['S']:>2} {r['rate']:>5.2f}  {m['fused']:10.3f} {m['separate']:9.3f}  "
                     f"{p['fused']:10.3f} {p['separate']:9.3f}  {r['measured_best']:<8} {r['predicted_choice']:<8} "
                     f"{100 * r['regret']:+6.1f}%")
    a = res["agreement"]
    if a["cases"]:
        lines.append(f"predicted placement within {100 * res['within']:.0f}% of the measured best: {a['within_5pct']}"
                     f"/{a['cases']} ({100 * a['share']:.0f}%, goal {100 * a['goal']['share']:.0f}%: "
                     f"{'met' if a['goal']['met'] else 'not met'}); exact {a['exact']}/{a['cases']}")
        lines += [f"  stage {s}: {v['within_5pct']}/{v['cases']} within, {v['exact']} exact"
                  for s, v in a["per_stage"].items()]
    return "\n".join(lines + format_excluded(res))
