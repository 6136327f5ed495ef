"""After the search: pick, per task, the schedule ``compile`` will use (tuned record or default schedule).

MetaSchedule measures candidates on the function specialized at the tuning size ``P``; the compiler uses
the trace replayed onto the symbolic kernel (:func:`.database.apply_trace`). For each task the best few
records are replayed that way (tuned patch tiles, else unit patch tiles), compiled with symbolic ``P``,
checked against TVM's unscheduled function (on this machine: at ``P = 1``, the tuning size and all patches)
and timed at ``P`` beside the default schedule (the default's own record, the search's starting point, is not
a candidate). A tuned record is chosen (:func:`choose`) only if it is correct and at least ``MARGIN`` faster
than the default schedule measured in the same run; otherwise the manifest says ``"chosen": "default"`` and
``compile`` keeps the default schedule.
"""

from __future__ import annotations

import numpy as np

from .database import apply_trace, ranked_records, trace_id, workload_hash, workload_mod
from .tasks import args_signature, fill_arguments, specialize, symbolic_vars

MARGIN = 0.03  # a tuned schedule must beat the default by 3% (timings on a shared machine move by more)
MAX_CANDIDATES = 3


def symbolic_func(task):
    """The function the compiler schedules for ``task`` (symbolic ``P`` where the kernel has one)."""
    if task.kernel == "static_op":
        return task.func()
    from .. import kernels as K

    return K.builder(task.kernel)(**task.params)


def default_schedule(task, func, target):
    """``func`` with the compiler's default schedule for ``task``."""
    if task.kernel == "static_op":
        from ..compiler.passes.schedule_static_ops import default_static_schedule

        return default_static_schedule(func, target)
    from .. import kernels as K

    return K.scheduled(task.kernel, target, func, **task.params).mod["main"]


def _at(task, func):
    return specialize(func, task.P) if task.P is not None else func


def _compile(func, target):
    import tvm

    return tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target)


def _run(ex, func_at_p, task, seed: int) -> list:
    import tvm
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    info = [a.as_json() for a in ArgInfo.from_prim_func(func_at_p)]
    layout = {i: task.num_patches for i, p in enumerate(func_at_p.params) if p.name in task.index_args}
    arrays = fill_arguments(info, {args_signature(info): layout}, seed)
    tensors = [tvm.runtime.tensor(a) for a in arrays]
    ex["main"](*tensors)
    return [t.numpy() for t in tensors]


def outputs_match(ex, ref_ex, task, sym) -> bool:
    """Whether ``ex`` and ``ref_ex`` (compiled from ``sym``'s schedules) leave the same arguments behind at
    ``P = 1``, the tuning size and all patches (one call for kernels without ``P``)."""
    sizes = sorted({1, task.P, task.num_patches}) if task.P is not None else [None]
    for k, P in enumerate(sizes):
        at = specialize(sym, P) if P is not None else sym
        got, want = _run(ex, at, task, k), _run(ref_ex, at, task, k)
        for g, w in zip(got, want):
            if g.dtype.kind == "f":
                if np.abs(g.astype(np.float64) - w).max(initial=0.0) > 1e-4 * max(1.0, float(np.abs(w).max(initial=0))):
                    return False
            elif not np.array_equal(g, w):
                return False
    return True


def choose(default_ms: float | None, timed: list) -> tuple | None:
    """The ``(ms, record id)`` of ``timed`` (candidates measured beside the default in the same run) that
    ``compile`` should use, or None (keep the default): the fastest, if it beats ``default_ms`` by
    :data:`MARGIN` (any that ran, when the default did not)."""
    best = min(timed, default=None)
    if best is None or (default_ms is not None and best[0] > (1 - MARGIN) * default_ms):
        return None
    return best


def _default_id(task, target) -> str | None:
    """Trace id of the default schedule's record (:func:`.space.seed_default`); None for static operators."""
    if task.kernel == "static_op":
        return None
    from .space import default_record_trace

    return trace_id(default_record_trace(task, target))


def _not_default(recs, task, sym, target) -> list:
    """``recs`` less those whose schedule is the default's (the search draws the default's knobs too)."""
    import tvm_ffi

    default = default_schedule(task, sym, target)
    out = []
    for r in recs:
        try:
            same = tvm_ffi.structural_equal(apply_trace(r.trace, sym, "tiled"), default)
        except Exception:  # noqa: BLE001 - does not replay: not the default (select reports it)
            same = False
        if not same:
            out.append(r)
    return out


def select(tasks, target, db, known: dict, builder, runner, check: bool, progress: bool = True,
           measure=None) -> None:
    """Fill ``known[task.key]`` with the default, unscheduled and tuned times at ``P`` and the choice.

    Parameters
    ----------
    check : bool
        Run the candidates here against the unscheduled function (``target`` must be this machine).
    measure : callable, optional
        ``(funcs, target, builder, runner, errors) -> [ms or None]`` (default :func:`.measure.measure`).
    """
    from tqdm import tqdm

    if measure is None:
        from .measure import measure

    for t in tqdm(tasks, desc="checking", unit="task", disable=not progress):
        entry = known.setdefault(t.key, {})
        default_id, sym = _default_id(t, target), symbolic_func(t)
        recs = [r for r in ranked_records(db, t) if r.run_secs and trace_id(r.trace) != default_id]
        recs = _not_default(recs[:4 * MAX_CANDIDATES], t, sym, target)[:MAX_CANDIDATES]
        ids = [trace_id(r.trace) for r in recs]
        if entry.get("candidates") == ids and "chosen" in entry:
            continue  # nothing new since the last selection
        if recs:
            entry["search_ms"] = 1e3 * float(np.median([float(s) for s in recs[0].run_secs]))
        entry["workload"] = workload_hash(workload_mod(t.func()))
        cands, errors = [], []
        ref = None
        variants = ("tiled", "unit") if symbolic_vars(sym) else ("tiled",)
        for rid, rec in zip(ids, recs):
            for variant in variants:  # the first variant that compiles and computes the right output
                try:
                    f = apply_trace(rec.trace, sym, variant)
                    ex = _compile(f, target) if (check or symbolic_vars(sym)) else None
                    if check:
                        ref = ref if ref is not None else _compile(sym, target)
                        if not outputs_match(ex, ref, t, sym):
                            errors.append(f"{rid}/{variant}: wrong output")
                            continue
                    cands.append(((rid, variant), f))
                    break
                except Exception as e:  # noqa: BLE001 - a record that does not replay is skipped
                    msg = str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__
                    errors.append(f"{rid}/{variant}: {msg}")
        funcs = [_at(t, default_schedule(t, sym, target))] + [_at(t, f) for _, f in cands]
        need_unscheduled = entry.get("unscheduled_ms") is None and target.kind.name == "llvm"
        if need_unscheduled:
            funcs.append(_at(t, sym))
        runs = [measure(funcs, target, builder, runner, errors) for _ in range(2)]  # two rounds: load drifts
        times = [min((r[i] for r in runs if r[i] is not None), default=None) for i in range(len(funcs))]
        if need_unscheduled:
            entry["unscheduled_ms"] = times.pop()
        entry["untuned_ms"] = times[0]
        timed = [(ms_, rid) for (rid, _), ms_ in zip(cands, times[1:]) if ms_ is not None]
        best, kept = min(timed, default=None), choose(times[0], timed)
        entry.update(candidates=ids, tuned_ms=None if best is None else best[0], checked=bool(check),
                     errors=errors[:MAX_CANDIDATES + 2])
        entry["chosen"] = "tuned" if kept else "default"
        entry["record"], entry["variant"] = kept[1] if kept else (None, None)
