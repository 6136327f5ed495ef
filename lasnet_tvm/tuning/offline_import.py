"""Offline (air-gapped) tuning, step 3: commit the winners of a measured offline folder to a device's database.

``lasnet-tvm tune --device NAME --import DIR/results.json`` reads ``results.json`` (written by ``measure.py``
on the device) and the ``offline.json`` beside it, checks that both belong together and to ``NAME``, and, per
task, commits the fastest correct candidate as a MetaSchedule tuning record where it beats the task's default
schedule (measured in the same run, interleaved) by :data:`.select.MARGIN`. The manifest then says
``"chosen": "tuned"`` with ``"imported"`` naming the offline build, so ``compile`` applies the record and its
manifest lists the functions that use imported records. The database and manifest are first written to a
temporary folder, read back there, then moved into place file by file (atomically); on any error the device's
database is left as it was.
"""

from __future__ import annotations

import datetime
import json
import shutil
import tempfile
from pathlib import Path

from ..errors import LasnetError


def _task_of(entry: dict, folder: Path):
    """The tuning task of a manifest entry, checked to be the workload this version of the kernels builds."""
    import tvm

    from .database import workload_hash, workload_mod
    from .static_ops import STATIC_KERNEL, StaticTask
    from .tasks import Task

    if entry["kernel"] == STATIC_KERNEL:
        func = tvm.ir.load_json((folder / entry["dir"] / "workload.json").read_text())
        task = StaticTask(entry["params"]["op"], func)
    else:
        task = Task(entry["kernel"], entry["params"], entry.get("P"), entry.get("num_patches"),
                    tuple(entry.get("index_args", ())))
    if workload_hash(workload_mod(task.func())) != entry.get("workload") or task.key != entry["key"]:
        raise LasnetError(f"{folder}: task {entry['name']} was built by another version of the kernels; "
                          f"build the offline folder again")
    return task


def winners(results: dict, manifest: dict, margin: float) -> dict:
    """Per task key with a correct candidate: ``best`` (the fastest correct candidate, default included) and
    ``best_ms``, ``default_ms``, ``other_ms`` (the fastest correct non-default candidate) and ``faster`` (a
    non-default best that beats the default by ``margin``)."""
    out = {}
    for e in manifest["tasks"]:
        timed = results["tasks"].get(e["key"], {}).get("candidates", [])
        ok = {c["id"]: float(c["median_ms"]) for c in timed
              if c.get("correct") is True and isinstance(c.get("median_ms"), (int, float)) and c["median_ms"] > 0}
        if not ok:
            continue
        best = min(ok, key=ok.get)
        dflt = ok.get("default")
        others = [v for k, v in ok.items() if k != "default"]
        out[e["key"]] = {"best": best, "best_ms": ok[best], "default_ms": dflt, "other_ms": min(others, default=None),
                         "faster": best != "default" and dflt is not None and ok[best] <= (1 - margin) * dflt}
    return out


def import_results(path, device: str, work_dir=None) -> dict:
    """Commit the winners of ``path`` into ``device``'s database (``work_dir``, default ``schedules/<name>``);
    return ``{"imported": [task names], "default": [...], "failed": [...], "work_dir": ...}``.

    Raises
    ------
    LasnetError
        Bad results file (see :func:`load_results`), no correct candidate at all, kernels changed since the
        build, a work dir of another device or busy; the database is then left as it was.
    """
    from tvm.s_tir import meta_schedule as ms

    from ..fsutil import atomic_write
    from .database import (
        DB_FILES,
        MANIFEST,
        WorkDirLock,
        open_database,
        ranked_records,
        read_manifest,
        trace_id,
        workload_mod,
    )
    from .offline_files import load_results, target_json, trace_from_json
    from .schedules import device_dir_name
    from .select import MARGIN
    from .tune import _check_work_dir, device_target

    path = Path(path)
    results, manifest = load_results(path, device)
    won = winners(results, manifest, MARGIN)
    if not won:
        raise LasnetError(f"{path}: no candidate is correct (each failed its check against the reference, or was "
                          f"not timed): nothing to import")
    dt = device_target(device)
    if json.dumps(manifest["target"], sort_keys=True) != json.dumps(target_json(dt.target), sort_keys=True):
        raise LasnetError(f"{path.parent}: built for target {manifest['target']}, but {device} is now "
                          f"{dt.target}; build the offline folder again")
    folder = path.parent
    tasks = {e["key"]: (e, _task_of(e, folder)) for e in manifest["tasks"]}
    work_dir = Path(work_dir) if work_dir is not None else Path("schedules") / device_dir_name(device)
    work_dir.mkdir(parents=True, exist_ok=True)
    stamp = {"offline": manifest["id"], "round": manifest.get("round", 1), "results": str(path),
             "measured": results.get("measured"), "host": results.get("where", {}).get("host")}
    summary = {"imported": [], "default": [], "failed": [], "work_dir": str(work_dir)}
    with WorkDirLock(work_dir):
        open_database(work_dir)  # a corrupt database stops here, untouched
        old = read_manifest(work_dir)
        _check_work_dir(old, work_dir, device)
        known = {e["key"]: e for e in old.get("tasks", [])}
        tmp = Path(tempfile.mkdtemp(prefix=".import-", dir=work_dir))
        try:
            for name in DB_FILES:
                src = work_dir / name
                (tmp / name).write_bytes(src.read_bytes() if src.exists() else b"")
            db = ms.database.JSONDatabase(work_dir=str(tmp), module_equality="structural")
            committed = {}
            for key, (e, task) in tasks.items():
                w = won.get(key)
                if w is None:
                    summary["failed"].append(e["name"])
                    continue
                if not w["faster"]:
                    summary["default"].append(e["name"])
                    if known.get(key, {}).get("chosen") != "tuned":  # an earlier tuned choice stays
                        known[key] = {**known.get(key, {}), **_entry(e, task), "chosen": "default", "record": None,
                                      "variant": None, "untuned_ms": w["default_ms"], "tuned_ms": w["other_ms"],
                                      "imported": stamp}
                    continue
                cand = next(c for c in e["candidates"] if c["id"] == w["best"])
                trace = trace_from_json(task, cand["trace"])
                wl = db.commit_workload(workload_mod(task.func()))
                db.commit_tuning_record(ms.database.TuningRecord(
                    trace, wl, [w["best_ms"] / 1e3], dt.target, ms.arg_info.ArgInfo.from_prim_func(task.func())))
                committed[key] = (e, task, cand, w)
            back = ms.database.JSONDatabase(work_dir=str(tmp), module_equality="structural")
            for key, (e, task, cand, w) in committed.items():
                if not any(trace_id(r.trace) == cand["id"] for r in ranked_records(back, task)):
                    raise LasnetError(f"internal: the record of {e['name']} does not read back as {cand['id']}")
                known[key] = {**known.get(key, {}), **_entry(e, task), "chosen": "tuned", "record": cand["id"],
                              "variant": cand["variant"], "checked": True, "candidates": [cand["id"]],
                              "untuned_ms": w["default_ms"], "tuned_ms": w["best_ms"], "errors": [],
                              "imported": stamp}
                summary["imported"].append(e["name"])
            new = _manifest(old, known, dt, f"offline {manifest['id']}")
            # all checks passed: move the files into place (the manifest last: it names the records)
            for name in DB_FILES:
                atomic_write(work_dir / name, (tmp / name).read_bytes(), "tuning database")
            atomic_write(work_dir / MANIFEST, json.dumps(new, indent=1, sort_keys=True) + "\n", "tuning manifest")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return summary


def _entry(e: dict, task) -> dict:
    return {**task.to_json(), "workload": e["workload"]}


def _manifest(old: dict, known: dict, dt, source: str) -> dict:
    import tvm

    return {**old, "device": dt.device, "target": str(dt.target),
            "host_cpu": str(tvm.target.codegen.llvm_get_system_cpu()) if dt.device == "local" else None,
            "tvm_version": tvm.__version__, "trials": int(old.get("trials", 0)), "measured": True,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "sources": sorted(set(old.get("sources", [])) | {source}),
            "tasks": sorted(known.values(), key=lambda e: e["key"])}
