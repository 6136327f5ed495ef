"""``lasnet-tvm bench rate``: latency ratio ``r_l = l_dyn / l_stat`` against the activation rate (paper Fig. 4/5).

For each measured block (by default the first identity block of every stage) the static block and the fully
fused dynamic block at each granularity S are compiled once (one symbolic-``P`` build serves every rate), every
variant is checked against PyTorch on its own input, and then all of them are timed in one interleaved,
call-by-call round-robin run (:func:`~lasnet_tvm.timing.time_interleaved`: medians of full block calls, Python
glue included). Each kernel is also timed alone with TVM's ``time_evaluator`` at the same active count. The
analytic model (:func:`lasnet_tvm.predictor.predict_block`) predicts the same points. :func:`measure_stage` is
shared with ``bench granularity``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from ..archs import BlockSpec
from ..errors import LasnetError
from ..models.synthetic import random_folded_block
from ..predictor import predict_block
from ..predictor.accuracy import accuracy
from ..predictor.kernel_ops import predict_step
from ..timing import time_interleaved
from .block import checked_dynamic, checked_static, compiled_block, kernel_rows, shape_of, sync_of

DEFAULT_RATES = tuple(round(0.1 * i, 1) for i in range(11))
DEFAULT_S = (1, 2, 4, 8)


def predicted_ops(lat) -> list[dict]:
    """JSON rows of the model's per-operator predictions (``op``, ``kind``, ``predicted_ms``)."""
    return [{"op": o.name, "kind": o.kind, "predicted_ms": o.total * 1e3} for o in lat]


def predict_kernels(rows: list[dict], steps, hw) -> None:
    """Fill ``predicted_ms`` of kernel rows (:func:`~lasnet_tvm.predictor.kernel_ops.predict_step`)."""
    for row, step in zip(rows, steps):
        row["predicted_ms"] = predict_step(step, row["P"], hw) * 1e3


def block_maker(board=None):
    """``(spec, target, fusion, seed) -> block``: :func:`~.block.compiled_block`, or with ``board`` (a
    :class:`lasnet_tvm.remote.Board`) a :class:`~lasnet_tvm.remote.RemoteBlock` of the same random weights for
    the board's target (``target`` is then ignored). ``fusion=None`` is the static block."""
    if board is None:
        return compiled_block
    return lambda spec, target, fusion, seed: board.block(random_folded_block(spec, seed), fusion or "all",
                                                          static=fusion is None)


def kernel_sum_spread(rows: list[dict]) -> dict:
    """Spread of a block timed as the sum of its kernels (on a board, without Python glue): the kernels'
    spreads summed field by field, so ``median_ms`` is the sum of the kernel medians; ``n`` samples per kernel."""
    out = {k: sum(r["spread"][k] for r in rows) for k in ("median_ms", "min_ms", "p25_ms", "p75_ms", "max_ms")}
    out["n"] = min(r["spread"]["n"] for r in rows)
    return out


def measure_stage(spec: BlockSpec, S_list, rates, hw, target, repeats: int, kernel_repeat: int = 5,
                  min_repeat_ms: float = 5, seed: int = 0, bar=None, exclude_mismatch: bool = False,
                  board=None) -> dict:
    """Measure and predict one block: static, and the fused dynamic block at every ``(S, rate)``.

    Returns
    -------
    dict
        ``block`` (its shape), ``static`` (measured and predicted ms, spread, kernels), ``points`` and
        ``max_rel_err``. A point (one per ``(S, rate)``) holds ``block``, ``stage``, ``S``, ``rate``,
        ``active_patches``, ``measured_ms`` / ``predicted_ms`` (dynamic), ``measured_static_ms`` /
        ``predicted_static_ms``, ``measured_ratio`` / ``predicted_ratio``, ``measured_kernel_sum_ms`` and
        ``measured_kernel_ratio`` (from the kernel times alone), ``spread``, ``kernels`` (per-kernel measured
        and predicted ms) and ``predicted_ops``. With ``exclude_mismatch``, dynamic variants whose mask or
        output differs from PyTorch are not timed but listed in ``excluded`` (``S``, ``rate``, ``error``).
        With ``board`` (:class:`lasnet_tvm.remote.Board`) every variant runs and is checked on the board, and
        its ``measured_ms`` is the sum of its kernel medians there (:func:`kernel_sum_spread`).

    Raises
    ------
    LasnetError
        The static block's output, or (unless ``exclude_mismatch``) a dynamic variant's mask or output, differs
        from the PyTorch reference.
    """
    make = block_maker(board)
    static = make(spec, target, None, seed)
    sync = sync_of(static)
    x_full, err = checked_static(static, seed)
    fns = {"static": lambda: (static(x_full), sync())}
    cases, errs, excluded = [], [err], []
    for S in S_list:
        blk = make(replace(spec, S=S), target, "all", seed)
        for r in rates:
            try:
                x, P, err = checked_dynamic(blk, r, seed + 1)
            except LasnetError as e:
                if not exclude_mismatch:
                    raise
                excluded.append({"block": spec.name, "stage": spec.stage, "S": S, "rate": r, "error": str(e)})
                continue
            errs.append(err)
            key = f"S{S}@{r}"
            fns[key] = (lambda b=blk, x=x: (b(x), sync()))
            cases.append((key, S, r, blk, x, P))
        if bar is not None:
            bar.update(1)
    # call by call: interference hits every variant alike; on a board: kernel sums, below
    t = time_interleaved(fns, repeats, batch=1) if board is None else None
    if bar is not None:
        bar.update(1)
    pred_static = predict_block(spec, hw, 0.0).static
    st_rows = kernel_rows(static, x_full, kernel_repeat, min_repeat_ms)
    predict_kernels(st_rows, static.steps, hw)
    st_t = t["static"] if t else kernel_sum_spread(st_rows)
    st = {"measured_ms": st_t["median_ms"], "spread": st_t,
          "measured_kernel_sum_ms": sum(k["measured_ms"] for k in st_rows),
          "predicted_ms": sum(o.total for o in pred_static) * 1e3, "kernels": st_rows,
          "predicted_ops": predicted_ops(pred_static)}
    points = []
    for key, S, r, blk, x, P in cases:
        rows = kernel_rows(blk, x, kernel_repeat, min_repeat_ms)
        predict_kernels(rows, blk.steps, hw)
        pred = predict_block(blk.fb.spec, hw, r, "all")
        tk = t[key] if t else kernel_sum_spread(rows)
        meas = tk["median_ms"]
        points.append({
            "block": spec.name, "stage": spec.stage, "S": S, "rate": r, "active_patches": P,
            "num_patches": blk.fb.spec.num_patches,
            "measured_ms": meas, "predicted_ms": pred.dynamic_s * 1e3,
            "measured_static_ms": st["measured_ms"], "predicted_static_ms": pred.static_s * 1e3,
            "measured_ratio": meas / st["measured_ms"], "predicted_ratio": pred.ratio,
            "measured_kernel_sum_ms": sum(k["measured_ms"] for k in rows),
            "measured_kernel_ratio": sum(k["measured_ms"] for k in rows) / st["measured_kernel_sum_ms"],
            "spread": tk,
            "kernels": rows, "predicted_ops": predicted_ops(pred.dynamic)})
        if bar is not None:
            bar.update(1)
    return {"block": shape_of(spec), "static": st, "points": points, "excluded": excluded,
            "max_rel_err": max(errs)}


def work_units(S_lists, rates) -> int:
    """Progress-bar units of :func:`measure_stage` calls: one per build, one timing, one per point."""
    return sum(len(S) + 1 + len(S) * len(rates) for S in S_lists)


def usable_S(blocks: list[BlockSpec], S_list, explicit: bool) -> list[list[int]]:
    """Per block, the S values not larger than its output size.

    Raises
    ------
    LasnetError
        An explicitly asked S fits no measured block, or S < 1.
    """
    if any(S < 1 for S in S_list):
        raise LasnetError(f"--S values must be >= 1, got {','.join(map(str, S_list))}")
    out = [[S for S in S_list if S <= b.out_size] for b in blocks]
    if explicit:
        for S in S_list:
            if not any(S in o for o in out):
                sizes = ", ".join(f"{b.name}: {b.out_size}" for b in blocks)
                raise LasnetError(f"S={S} exceeds the output size of every measured block ({sizes})")
    return out


def _acc(measured, predicted) -> dict | None:
    return accuracy(measured, predicted) if measured else None


def accuracy_section(stages: list[dict]) -> dict:
    """``accuracy(...)`` over block-level points (dynamic and static), ratios, kernel sums and kernel types."""
    pts = [p for st in stages for p in st["points"]]
    sts = [st["static"] for st in stages]
    dyn = ([p["measured_ms"] for p in pts], [p["predicted_ms"] for p in pts])
    sta = ([s["measured_ms"] for s in sts], [s["predicted_ms"] for s in sts])
    sec = {"block": _acc(dyn[0] + sta[0], dyn[1] + sta[1]), "dynamic": _acc(*dyn), "static": _acc(*sta),
           "ratio": _acc([p["measured_ratio"] for p in pts], [p["predicted_ratio"] for p in pts]),
           "kernel_sum": _acc([x["measured_kernel_sum_ms"] for x in pts + sts], [x["predicted_ms"] for x in pts + sts])}
    by_kernel = defaultdict(lambda: ([], []))
    for rows in [p["kernels"] for p in pts] + [s["kernels"] for s in sts]:
        for k in rows:
            if k.get("predicted_ms") is not None and k["predicted_ms"] > 0:
                by_kernel[k["kernel"]][0].append(k["measured_ms"])
                by_kernel[k["kernel"]][1].append(k["predicted_ms"])
    sec["per_kernel"] = {k: accuracy(*v) for k, v in sorted(by_kernel.items())} or None
    sec["per_stage"] = stage_accuracy(stages) or None
    sec["notes"] = ("block: full-call medians (static and dynamic) vs the model; ratio: r_l measured vs predicted; "
                    "kernel_sum: sum of time_evaluator kernel medians vs the model"
                    + "; per_kernel: time_evaluator kernel medians vs predict_step, by kernel name"
                    + "; per_stage: dynamic blocks with active patches, full-call medians vs the model")
    return sec


def stage_accuracy(stages: list[dict]) -> dict:
    """Per stage: :func:`~lasnet_tvm.predictor.accuracy.accuracy` of the dynamic block latencies with active
    patches (``active_patches > 0``), the figures the predictor is held to on every stage."""
    out = {}
    for st in stages:
        pts = [p for p in st["points"] if p["active_patches"] > 0]
        if pts:
            out[f"stage {st['block']['stage']} {st['block']['block']}"] = accuracy(
                [p["measured_ms"] for p in pts], [p["predicted_ms"] for p in pts])
    return out


def _pick(by_S: dict[int, float], tolerance: float) -> tuple[int, int]:
    best = min(by_S, key=by_S.get)
    choice = min(S for S, v in by_S.items() if v <= by_S[best] * (1.0 + tolerance))
    return best, choice


def best_S(stages: list[dict], tolerance: float = 0.05, within: float = 0.05) -> list[dict]:
    """Per stage and rate with two or more S: measured and predicted ``r_l`` by S, the fastest S of each
    (``*_best_S``; ``best_agree``), how much slower the predicted-best S measured than the measured best
    (``regret``; ``best_within``: at most ``within``), and the paper's trade-off choice, the smallest S within
    ``tolerance`` of the fastest (``*_choice_S``; ``choice_agree``)."""
    out = []
    for st in stages:
        for r in sorted({p["rate"] for p in st["points"]}):
            pts = sorted((p for p in st["points"] if p["rate"] == r), key=lambda p: p["S"])
            if len(pts) < 2:
                continue
            meas = {p["S"]: p["measured_ratio"] for p in pts}
            pred = {p["S"]: p["predicted_ratio"] for p in pts}
            (mb, mc), (pb, pc) = _pick(meas, tolerance), _pick(pred, tolerance)
            regret = meas[pb] / meas[mb] - 1.0
            out.append({"block": st["block"]["block"], "stage": st["block"]["stage"], "rate": r,
                        "S": [p["S"] for p in pts], "measured_ratio": list(meas.values()),
                        "predicted_ratio": list(pred.values()),
                        "measured_best_S": mb, "predicted_best_S": pb, "best_agree": mb == pb,
                        "regret": regret, "best_within": regret <= within,
                        "measured_choice_S": mc, "predicted_choice_S": pc, "choice_agree": mc == pc,
                        "tolerance": tolerance, "within": within})
    return out


def agreement(best: list[dict]) -> dict:
    """Shares of :func:`best_S` rows where the predicted fastest S is the measured one (``best``), measures within
    ``within`` of it (``best_within``), and where the trade-off choices agree (``choice``)."""
    n = len(best)

    def share(key):
        return sum(b[key] for b in best) / n if n else None

    return {"best": share("best_agree"), "best_within": share("best_within"), "choice": share("choice_agree"),
            "n": n, "within": best[0]["within"] if best else None}


def format_agreement(a: dict) -> list[str]:
    """Text line of an :func:`agreement`."""
    if not a["n"]:
        return []
    return [f"best-S agreement: fastest {100 * a['best']:.0f}%, within {100 * a['within']:.0f}% of the measured "
            f"fastest {100 * a['best_within']:.0f}%, trade-off choice {100 * a['choice']:.0f}% of {a['n']} "
            f"stage/rate pairs"]


def measure_stages(title: str, blocks: list[BlockSpec], S_lists, rates, hw, target, repeats: int,
                   kernel_repeat: int, min_repeat_ms: float, seed: int, log, exclude_mismatch: bool,
                   board) -> list[dict]:
    """:func:`measure_stage` for every block at its S list (blocks with an empty list are skipped), with one
    progress bar titled ``title``."""
    from ..timing import progress

    bar = progress(work_units(S_lists, rates), title)
    stages = []
    try:
        for spec, S_list in zip(blocks, S_lists):
            if not S_list:
                log(f"skipping {spec.name}: no S fits its output size {spec.out_size}")
                continue
            log(f"{spec.name} (stage {spec.stage}): static + S={','.join(map(str, S_list))} at "
                f"r={','.join(map(str, rates))}, {repeats} rounds")
            stages.append(measure_stage(spec, S_list, rates, hw, target, repeats, kernel_repeat, min_repeat_ms,
                                        seed, bar, exclude_mismatch, board))
    finally:
        bar.close()
    return stages


def run(blocks: list[BlockSpec], S_lists, rates, hw, target, repeats: int, kernel_repeat: int = 5,
        min_repeat_ms: float = 5, seed: int = 0, log=print, exclude_mismatch: bool = False, board=None) -> dict:
    """Measure every block (on ``board`` if given, see :func:`measure_stage`); returns ``stages`` (one
    :func:`measure_stage` result each), ``points``, ``accuracy``."""
    stages = measure_stages("bench rate", blocks, S_lists, rates, hw, target, repeats, kernel_repeat, min_repeat_ms,
                            seed, log, exclude_mismatch, board)
    best = best_S(stages)
    return {"stages": stages, "points": [p for st in stages for p in st["points"]], "best": best,
            "agreement": agreement(best), "excluded": [e for st in stages for e in st["excluded"]],
            "accuracy": accuracy_section(stages), "max_rel_err": max(st["max_rel_err"] for st in stages)}


def _acc_line(name: str, a: dict) -> str:
    rho = "n/a" if a["spearman"] is None else f"{a['spearman']:.3f}"
    return (f"  {name:<15} n={a['n']:<4} MAPE {100 * a['mape']:5.1f}%  within {100 * a['within']:.0f}%: "
            f"{100 * a['share_within']:5.1f}%  Spearman {rho}  pred/meas {a['mean_ratio']:.2f}")


def format_excluded(res: dict) -> list[str]:
    """Text lines naming the variants left out because they differ from PyTorch (``--exclude-mismatch``)."""
    return [f"EXCLUDED (differs from PyTorch, not timed): {e['error']}" for e in res.get("excluded", [])]


def format_accuracy(acc: dict) -> list[str]:
    """Text lines of an :func:`accuracy_section`."""
    lines = ["accuracy of the predictions (block level):"]
    lines += [_acc_line(k, acc[k]) for k in ("block", "dynamic", "static", "ratio", "kernel_sum") if acc[k]]
    if acc.get("per_stage"):
        lines.append("per stage (dynamic, active patches > 0):")
        lines += [_acc_line(k, v) for k, v in acc["per_stage"].items()]
    if acc["per_kernel"]:
        lines.append("per kernel type:")
        lines += [_acc_line(k, v) for k, v in acc["per_kernel"].items()]
    return lines


def _cell(row: dict, rate: float, key: str) -> str:
    return f"{row[rate][key]:5.2f}" if rate in row else "    -"


def format_table(res: dict) -> str:
    """Plain-text table: measured / predicted ``r_l`` per stage, S and rate, then the accuracy figures."""
    lines = [f"bench rate: {res['arch']} on {res['device']}, profile {res['profile']['name']}, "
             f"{res['repeats']} rounds (median); r_l = dynamic / static"]
    for st in res["stages"]:
        b, s = st["block"], st["static"]
        rates = sorted({p["rate"] for p in st["points"]})
        lines.append(f"stage {b['stage']} {b['block']} {b['C_in']}->{b['C_mid']}->{b['C_out']} {b['H']}x{b['H']}: "
                     f"static measured {s['measured_ms']:.3f} ms, predicted {s['predicted_ms']:.3f} ms")
        lines.append("  r_l         " + " ".join(f"{r:>5.2f}" for r in rates))
        for S in sorted({p["S"] for p in st["points"]}):
            row = {p["rate"]: p for p in st["points"] if p["S"] == S}
            lines.append(f"  S={S:<2} meas   " + " ".join(_cell(row, r, "measured_ratio") for r in rates))
            lines.append("        pred   " + " ".join(_cell(row, r, "predicted_ratio") for r in rates))
    return "\n".join(lines + format_agreement(res.get("agreement") or {"n": 0}) + format_excluded(res)
                     + format_accuracy(res["accuracy"]))
