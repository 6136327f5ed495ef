"""bench rate / granularity figures on synthetic measurements: per-stage accuracy and best-S agreement."""

import pytest

from lasnet_tvm.benchmarks.rate import agreement, best_S, format_agreement, stage_accuracy


def _stage(stage, rows):
    """rows: (S, rate, P, measured_ms, predicted_ms); the static block takes 10 ms measured and predicted."""
    pts = [{"S": S, "rate": r, "active_patches": P, "measured_ms": m, "predicted_ms": p,
            "measured_ratio": m / 10, "predicted_ratio": p / 10} for S, r, P, m, p in rows]
    return {"block": {"block": f"b{stage}", "stage": stage}, "points": pts}


STAGES = [
    _stage(1, [(1, 0.0, 0, 1.0, 9.0), (1, 0.5, 8, 8.0, 8.8), (2, 0.5, 2, 6.0, 6.0), (4, 0.5, 1, 6.2, 5.5),
               (1, 0.9, 14, 9.0, 9.9), (2, 0.9, 4, 5.0, 6.0), (4, 0.9, 2, 7.0, 5.5)]),
    _stage(2, [(1, 0.5, 3, 4.0, 4.0), (2, 0.5, 1, 3.0, 3.3)]),
]


def test_stage_accuracy_leaves_out_zero_patch_points():
    acc = stage_accuracy(STAGES)
    a = acc["stage 1 b1"]
    assert a["n"] == 6  # the point without active patches is not scored
    errs = [0.8 / 8, 0, 0.7 / 6.2, 0.9 / 9, 1 / 5, 1.5 / 7]
    assert a["mape"] == pytest.approx(sum(errs) / 6)
    assert acc["stage 2 b2"]["n"] == 2 and acc["stage 2 b2"]["mape"] == pytest.approx(0.05)


def test_best_S_regret_and_agreement():
    best = best_S(STAGES, tolerance=0.05, within=0.05)
    assert [(b["stage"], b["rate"]) for b in best] == [(1, 0.5), (1, 0.9), (2, 0.5)]  # rate 0: a single S
    r05, r09, s2 = best
    # stage 1, r=0.5: measured fastest S=2 (6.0); predicted S=4, which measured 6.2: 3.3 % slower
    assert (r05["measured_best_S"], r05["predicted_best_S"]) == (2, 4) and not r05["best_agree"]
    assert r05["regret"] == pytest.approx(6.2 / 6.0 - 1) and r05["best_within"]
    # trade-off choice (smallest S within 5 % of the fastest): measured S=2; predicted S=4 alone (S=2: 6.0 > 5.775)
    assert (r05["measured_choice_S"], r05["predicted_choice_S"]) == (2, 4)
    # stage 1, r=0.9: predicted S=4 measured 7.0 vs 5.0: 40 % slower
    assert r09["regret"] == pytest.approx(0.4) and not r09["best_within"]
    assert s2["best_agree"] and s2["regret"] == 0.0
    a = agreement(best)
    assert a == {"best": pytest.approx(1 / 3), "best_within": pytest.approx(2 / 3), "choice": pytest.approx(1 / 3),
                 "n": 3, "within": 0.05}
    assert format_agreement(a) == ["best-S agreement: fastest 33%, within 5% of the measured fastest 67%, "
                                   "trade-off choice 33% of 3 stage/rate pairs"]
    assert agreement([])["n"] == 0 and format_agreement(agreement([])) == []
