"""Per-task tuning report (``lasnet-tvm tune --json``): the manifest's timings of the tasks just tuned."""

from __future__ import annotations


def tuning_report(manifest: dict, tasks: list, seconds: float | None = None) -> dict:
    """Timings of ``tasks`` from a tuning ``manifest`` (see :func:`.tune.tune`), with totals.

    Each row gives, at the task's tuning size P: TVM's unscheduled function, the default schedule, the
    best tuned record as ``compile`` replays it, which of the two ``compile`` uses, and their ratios; and the
    predictor's priority (``calls`` per image in the two networks, their ``predicted_ms``, whether the search
    reached the task: ``searched``, see :mod:`.priority`).
    A total is None when a row lacks that timing (e.g. ``--no-measure``).
    """
    by_key = {e["key"]: e for e in manifest.get("tasks", [])}
    rows = []
    for t in tasks:
        e = by_key.get(t.key, {})
        u, d, tu = e.get("unscheduled_ms"), e.get("untuned_ms"), e.get("tuned_ms")
        rows.append({
            "task": t.name, "kernel": t.kernel, "params": t.params, "P": t.P, "patches": t.num_patches,
            "unscheduled_ms": u, "default_ms": d, "tuned_ms": tu, "search_best_ms": e.get("search_ms"),
            "chosen": e.get("chosen"), "compile_uses_ms": tu if e.get("chosen") == "tuned" else d,
            "calls": e.get("calls"), "predicted_ms": e.get("predicted_ms"), "searched": e.get("searched"),
            "tuned_vs_default": d / tu if d and tu else None,
            "tuned_vs_unscheduled": u / tu if u and tu else None,
        })

    def total(k):
        vals = [r[k] for r in rows]
        return None if not vals or any(v is None for v in vals) else sum(vals)

    return {
        "device": manifest.get("device"), "target": manifest.get("target"), "trials": manifest.get("trials"),
        "tuning_seconds": None if seconds is None else round(seconds, 1), "tasks": rows,
        "total_ms": {k: total(f"{k}_ms") for k in ("unscheduled", "default", "compile_uses")},
    }


__all__ = ["tuning_report"]
