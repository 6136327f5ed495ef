"""``lasnet-tvm bench fusion``: the operator-fusion ablation of paper Table 1, measured and predicted.

One block (by default the first identity block of stage 1 of LAS-ResNet-101, S=4, r=0.6) is compiled static and
in the four fusion variants (``none``, ``masker``, ``masker+gather``, ``all``; see
:mod:`lasnet_tvm.block_runtime`). Every variant is checked against PyTorch on its input, then all are timed in
one interleaved call-by-call round-robin run (medians of full block calls) and each kernel alone with
``time_evaluator``. The analytic model predicts every variant (``predict_block(..., fusion=f)``) and the static block.
"""

from __future__ import annotations

from dataclasses import replace

from ..archs import BlockSpec
from ..block_plan import Fusion
from ..predictor import predict_block
from ..timing import progress, time_interleaved
from .block import checked_dynamic, checked_static, kernel_rows, shape_of, sync_of
from .rate import block_maker, kernel_sum_spread, predict_kernels, predicted_ops

FUSIONS = Fusion.values()
VARIANTS = ("static",) + FUSIONS


def run(spec: BlockSpec, S_list, rates, hw, target, repeats: int, kernel_repeat: int = 5,
        min_repeat_ms: float = 5, seed: int = 0, log=print, board=None) -> dict:
    """Check, time and predict the static block and every fusion variant at each ``(S, rate)``.

    Returns
    -------
    dict
        ``block`` (shape), ``cases`` (one per ``(S, rate)`` with a row per variant: ``measured_ms``,
        ``measured_kernel_sum_ms``, ``predicted_ms``, spread, kernels, predicted ops) and ``max_rel_err``.
        With ``board`` (:class:`lasnet_tvm.remote.Board`) the variants run and are checked on the board and
        ``measured_ms`` is the sum of the kernel medians there.
    """
    cases = [(S, r) for S in S_list for r in rates]
    bar = progress(len(S_list) * len(FUSIONS) + 2 + len(cases) * len(VARIANTS), "bench fusion")
    try:
        make = block_maker(board)
        static = make(spec, target, None, seed)
        sync = sync_of(static)
        x_full, err = checked_static(static, seed)
        errs = {"static": err}
        fns = {"static": lambda: (static(x_full), sync())}
        inputs = {}
        bar.update(1)
        for S in S_list:
            log(f"compiling {spec.name} S={S} in {len(FUSIONS)} fusion variants ...")
            for f in FUSIONS:
                blk = make(replace(spec, S=S), target, f, seed)
                for r in rates:
                    x, P, errs[f"{f}/S{S}@{r}"] = checked_dynamic(blk, r, seed + 1)
                    inputs[(f, S, r)] = (blk, x, P)
                    fns[f"{f}/S{S}@{r}"] = (lambda b=blk, x=x: (b(x), sync()))
                bar.update(1)
        log(f"all {len(errs)} variants match PyTorch (max rel err {max(errs.values()):.1e}); timing "
            + (f"{repeats} rounds ..." if board is None else f"each kernel on board {board.key!r} ..."))
        # call by call: interference hits every variant alike; on a board: kernel sums, below
        t = time_interleaved(fns, repeats, batch=1) if board is None else None
        bar.update(1)
        st_rows = kernel_rows(static, x_full, kernel_repeat, min_repeat_ms)
        predict_kernels(st_rows, static.steps, hw)
        out = []
        for S, r in cases:
            pred = {f: predict_block(replace(spec, S=S), hw, r, f) for f in FUSIONS}
            st_t = t["static"] if t else kernel_sum_spread(st_rows)
            rows = [{"variant": "static", "measured_ms": st_t["median_ms"], "spread": st_t,
                     "measured_kernel_sum_ms": sum(k["measured_ms"] for k in st_rows),
                     "predicted_ms": pred["all"].static_s * 1e3, "kernels": st_rows,
                     "predicted_ops": predicted_ops(pred["all"].static)}]
            bar.update(1)
            P = None
            for f in FUSIONS:
                blk, x, P = inputs[(f, S, r)]
                k = kernel_rows(blk, x, kernel_repeat, min_repeat_ms)
                predict_kernels(k, blk.steps, hw)
                tk = t[f"{f}/S{S}@{r}"] if t else kernel_sum_spread(k)
                rows.append({"variant": f, "measured_ms": tk["median_ms"], "spread": tk,
                             "measured_kernel_sum_ms": sum(row["measured_ms"] for row in k),
                             "predicted_ms": pred[f].dynamic_s * 1e3, "kernels": k,
                             "predicted_ops": predicted_ops(pred[f].dynamic)})
                bar.update(1)
            g = replace(spec, S=S).num_patches
            out.append({"S": S, "rate": r, "active_patches": P, "num_patches": g, "variants": rows})
    finally:
        bar.close()
    return {"block": shape_of(spec), "cases": out, "max_rel_err": errs}


def format_table(res: dict) -> str:
    """Plain-text Table 1: measured (full call, kernel sum) and predicted ms per variant, speedups vs ``none``."""
    b = res["block"]
    lines = [f"bench fusion: {res['arch']} {b['block']} {b['C_in']}->{b['C_mid']}->{b['C_out']} {b['H']}x{b['H']} "
             f"on {res['device']}, profile {res['profile']['name']}, {res['repeats']} rounds (median ms)"]
    for c in res["cases"]:
        v = {row["variant"]: row for row in c["variants"]}
        lines.append(f"S={c['S']} r={c['rate']} ({c['active_patches']}/{c['num_patches']} patches)")
        lines.append("  variant        measured  kernels  predicted  pred/meas  speedup vs none: meas  pred")
        for name in VARIANTS:
            row = v[name]
            none = v["none"]
            sp = ("" if name == "static" else f"{none['measured_ms'] / row['measured_ms']:22.2f}x "
                  f"{none['predicted_ms'] / row['predicted_ms']:5.2f}x")
            lines.append(f"  {name:<14} {row['measured_ms']:8.3f} {row['measured_kernel_sum_ms']:8.3f} "
                         f"{row['predicted_ms']:10.3f} {row['predicted_ms'] / row['measured_ms']:10.2f}{sp}")
    lines.append(f"max rel err vs PyTorch {max(res['max_rel_err'].values()):.1e}")
    return "\n".join(lines)
