"""``lasnet-tvm bench granularity``: latency ratio ``r_l`` against the granularity S at a fixed rate (paper Fig. 6).

Measured exactly as ``bench rate`` (:func:`lasnet_tvm.benchmarks.rate.measure_stage`: the static block and the
fused dynamic block for every S of a stage, timed in one interleaved run, checked against PyTorch first), at
the candidate S of each stage (:func:`lasnet_tvm.predictor.stage_candidates`: powers of two and divisors of
the output size, below the size). For every stage and rate the best S by measurement and by prediction are
compared twice: the fastest S (``best``), and the paper's trade-off choice, the smallest S whose latency is
within ``tolerance`` of the fastest (``choice``, as :func:`lasnet_tvm.predictor.search_granularity` picks);
and how much slower the predicted fastest S measured than the measured fastest (``regret``, ``best_within``:
at most 5 %) (:func:`lasnet_tvm.benchmarks.rate.best_S`).
"""

from __future__ import annotations

from ..archs import BlockSpec
from ..predictor import stage_candidates
from .rate import (accuracy_section, agreement, best_S, format_accuracy, format_agreement, format_excluded,
                   measure_stages)


def candidates(blocks: list[BlockSpec], S_list=None) -> list[list[int]]:
    """Per block, the S to try: ``S_list`` filtered to the block's output size, or its stage candidates."""
    if S_list is None:
        return [stage_candidates(b.out_size) for b in blocks]
    return [[S for S in S_list if S <= b.out_size] for b in blocks]


def run(blocks: list[BlockSpec], S_lists, rates, hw, target, repeats: int, kernel_repeat: int = 5,
        min_repeat_ms: float = 5, tolerance: float = 0.05, seed: int = 0, log=print,
        exclude_mismatch: bool = False, board=None) -> dict:
    """Measure every block at its S list and rates (on ``board`` if given, see
    :func:`~lasnet_tvm.benchmarks.rate.measure_stage`); returns ``stages``, ``points``, ``best``, ``agreement``,
    ``accuracy``."""
    stages = measure_stages("bench granularity", blocks, S_lists, rates, hw, target, repeats, kernel_repeat,
                            min_repeat_ms, seed, log, exclude_mismatch, board)
    best = best_S(stages, tolerance)
    return {"stages": stages, "points": [p for st in stages for p in st["points"]], "best": best,
            "excluded": [e for st in stages for e in st["excluded"]],
            "agreement": agreement(best),
            "accuracy": accuracy_section(stages), "max_rel_err": max(st["max_rel_err"] for st in stages)}


def format_table(res: dict) -> str:
    """Plain-text table: ``r_l`` by S per stage and rate, best S measured vs predicted, accuracy figures."""
    lines = [f"bench granularity: {res['arch']} on {res['device']}, profile {res['profile']['name']}, "
             f"{res['repeats']} rounds (median); r_l = dynamic / static"]
    for b in res["best"]:
        lines.append(f"stage {b['stage']} {b['block']} r={b['rate']}")
        lines.append("  S        " + " ".join(f"{S:>5d}" for S in b["S"]))
        lines.append("  meas r_l " + " ".join(f"{v:5.2f}" for v in b["measured_ratio"]))
        lines.append("  pred r_l " + " ".join(f"{v:5.2f}" for v in b["predicted_ratio"]))
        lines.append(f"  fastest S: measured {b['measured_best_S']}, predicted {b['predicted_best_S']} "
                     f"({'agree' if b['best_agree'] else 'differ'}, measured {100 * b['regret']:+.1f}%); within {100 * b['tolerance']:.0f}%: "
                     f"measured {b['measured_choice_S']}, predicted {b['predicted_choice_S']} "
                     f"({'agree' if b['choice_agree'] else 'differ'})")
    lines += format_agreement(res["agreement"])
    return "\n".join(lines + format_excluded(res) + format_accuracy(res["accuracy"]))
