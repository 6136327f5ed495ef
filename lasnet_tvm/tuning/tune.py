"""``tune``: MetaSchedule tuning of a network's kernels for one device, into ``schedules/<name>/``.

The tasks (LAS kernels, static kernels and static operators; see :mod:`.tasks`, :mod:`.static_ops`) are
tuned together by MetaSchedule's gradient task scheduler, which shares ``trials`` across them, with the
xgboost cost model; given the predictor's estimate of each task's time in the networks (:mod:`.priority`),
the trials go to the tasks that matter most. A kernel's space is its hand-written default schedule with its
tile sizes as knobs (:mod:`.space`), and the search starts from the default, measured first in the same run.
Measurements run on this machine (``--device local``) or on a board behind a TVM RPC tracker. Results are
appended to the device's JSON database (MetaSchedule writes each measured batch as it completes). Then
:func:`.select.select` picks, per task, the tuned record or the default schedule, and the manifest is
rewritten atomically.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import LasnetError
from .database import WorkDirLock, best_record, open_database, read_manifest, write_manifest
from .tasks import allocator_layouts

LOG = logging.getLogger(__name__)


@dataclass
class DeviceTarget:
    """Where a device's kernels are built for and measured."""

    device: str
    target: object  # tvm.target.Target
    gpu: bool


def device_target(device: str) -> DeviceTarget:
    """The tuning target of ``device`` (``local`` = this CPU with its physical core count).

    Raises
    ------
    LasnetError
        Unknown device.
    """
    import tvm

    from ..predictor import get_profile, known_devices
    from ..targets import host_cpu, resolve_target, target_kind

    if device == "local":
        import psutil

        cores = psutil.cpu_count(logical=False) or 1
        return DeviceTarget(device, tvm.target.Target({"kind": "llvm", "mcpu": host_cpu(), "num-cores": cores}),
                            False)
    if device not in known_devices():
        raise LasnetError(f"unknown device {device!r}; known devices: {', '.join(known_devices())}")
    profile = get_profile(device, measure_local=False)
    target = resolve_target(profile.target)
    if target_kind(target) == "llvm" and "num-cores" not in target.attrs:
        cfg = dict(target.export())
        cfg["num-cores"] = int(getattr(profile, "pes", 1) or 1)
        target = tvm.target.Target(cfg)
    return DeviceTarget(device, target, target_kind(target) != "llvm")


def _record_defaults(db, tasks, dt: DeviceTarget) -> None:
    """``--no-measure``: one unmeasured record (run_secs None) per LAS kernel task holding its default
    schedule (static operators keep the compiler's default schedule without a record)."""
    from tvm.s_tir import meta_schedule as ms

    from .. import kernels as K
    from .database import workload_mod

    for t in tasks:
        if t.kernel == "static_op" or best_record(db, t) is not None:
            continue
        sch = K.scheduled(t.kernel, dt.target, t.func(), **t.params)
        wl = db.commit_workload(workload_mod(t.func()))
        db.commit_tuning_record(ms.database.TuningRecord(sch.trace, wl, None, dt.target,
                                                         ms.arg_info.ArgInfo.from_prim_func(t.func())))


def _quiet_metaschedule() -> None:
    for name in ("tvm.s_tir.meta_schedule", "tvm.meta_schedule"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _check_work_dir(manifest: dict, work_dir: Path, device: str) -> None:
    import tvm

    if manifest.get("device") not in (None, device):
        raise LasnetError(f"{work_dir} holds schedules of {manifest['device']!r}, not {device!r}")
    cpu = str(tvm.target.codegen.llvm_get_system_cpu())
    if device == "local" and manifest.get("host_cpu") not in (None, cpu):
        raise LasnetError(f"{work_dir} holds schedules of a {manifest['host_cpu']} CPU; this one is {cpu}")


def tune(tasks: list, device: str, work_dir: Path | None = None, trials: int = 64,
         tracker: str | None = None, key: str | None = None, no_measure: bool = False,
         timeout: float = 120.0, progress: bool = True, source: str = "", per_iter: int | None = None,
         priorities: dict | None = None) -> dict:
    """Tune ``tasks`` for ``device`` into ``work_dir`` (default ``schedules/<name>``, see
    :func:`.schedules.device_dir_name`); return the manifest.

    ``per_iter`` is the number of candidates measured per search round of a task (default: about a
    quarter of a task's share of ``trials``, 8 to 32). ``priorities`` (:func:`.priority.task_priorities`):
    the search visits the tasks in the order of their predicted time, only as many as the trials reach
    (:func:`.priority.plan`), weighted by their calls; the manifest records each task's priority and whether
    it was searched.

    Raises
    ------
    LasnetError
        Unknown device, nothing to measure on, tracker not answering, corrupt database, busy work dir.
    """
    import tvm

    from .schedules import device_dir_name

    dt = device_target(device)
    work_dir = Path(work_dir) if work_dir is not None else Path("schedules") / device_dir_name(device)
    if tracker is None and not no_measure:
        if dt.gpu and not tvm.cuda(0).exist:
            raise LasnetError(f"no hardware to measure {device} ({dt.target.kind.name}): give --tracker HOST:PORT "
                              f"--key KEY, or --no-measure to record default schedules (unmeasured)")
        if not dt.gpu and device != "local":
            raise LasnetError(f"{device} is not this machine: give --tracker HOST:PORT --key KEY, or --no-measure")
    if trials < 0:
        raise LasnetError(f"--trials must be >= 0, got {trials}")
    work_dir.mkdir(parents=True, exist_ok=True)
    with WorkDirLock(work_dir):
        db = open_database(work_dir, repair_tail=True)
        manifest = read_manifest(work_dir)
        _check_work_dir(manifest, work_dir, device)
        known = {t["key"]: t for t in manifest.get("tasks", [])}
        for t in tasks:
            known.setdefault(t.key, {}).update(searched=False, **(priorities[t.key].to_json() if priorities else {}))
        done = 0
        try:
            if no_measure:
                _record_defaults(db, tasks, dt)
                for t in tasks:
                    if t.kernel != "static_op":
                        known.setdefault(t.key, {}).update(chosen="unmeasured")
            else:
                per_iter = per_iter or max(8, min(32, trials // max(1, 4 * len(tasks))))
                done = _measure_and_tune(tasks, dt, db, work_dir, known, trials, tracker, key, timeout, progress,
                                         per_iter, priorities)
        finally:  # also on Ctrl-C: the records measured so far are in the database; describe them
            manifest = _update_manifest(manifest, tasks, known, dt, done, no_measure, source)
            write_manifest(work_dir, manifest)
    return manifest


def _measure_and_tune(tasks, dt, db, work_dir, known, trials, tracker, key, timeout, progress, per_iter,
                      priorities) -> int:
    """Tune (``trials`` in all), then choose each task's schedule (:func:`.select.select`); return the
    trials run."""
    from .measure import PersistentBuilder, close_runner, make_runner
    from .priority import plan
    from .progress import ProgressCallback
    from .select import select

    _quiet_metaschedule()
    searched, weights = plan(tasks, priorities, trials, per_iter)
    for t in tasks:
        known.setdefault(t.key, {})["searched"] = trials > 0 and t in searched
    runner = make_runner(allocator_layouts(tasks), tracker, key, timeout)
    builder = PersistentBuilder(timeout_sec=timeout)
    cb = ProgressCallback(trials, len(searched), enabled=progress and trials > 0)
    try:
        if trials > 0:
            spaces = _seed_defaults(tasks, dt.target, db, builder, runner)
            try:
                _search(searched, weights, spaces, dt, db, work_dir, trials, per_iter, builder, runner, cb)
            finally:
                cb.close()
        select(tasks, dt.target, db, known, builder, runner, check=tracker is None and dt.device == "local",
               progress=progress)
    finally:
        builder.close()
        close_runner(runner)
    return cb.done


def _search(tasks, weights, spaces, dt, db, work_dir, trials, per_iter, builder, runner, cb) -> None:
    """MetaSchedule's evolutionary search over ``tasks`` (in this order, with these weights), xgboost cost
    model, gradient task scheduler; logs under ``work_dir/logs``."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.logging import get_loggers_from_work_dir
    from tvm.s_tir.meta_schedule.utils import fork_seed

    cores = int(dt.target.attrs.get("num-cores", 1)) if not dt.gpu else "physical"
    # a smaller population than MetaSchedule's default (512): the search itself costs seconds per round on
    # 2 cores, which small trial budgets cannot afford for every task
    strategy = ms.search_strategy.EvolutionarySearch(population_size=128, init_min_unmeasured=16,
                                                     genetic_num_iters=2)
    names = [t.name for t in tasks]
    contexts = [ms.TuneContext(mod=t.func(), target=dt.target, space_generator=spaces.get(t.name, "post-order-apply"),
                               search_strategy=strategy, task_name=t.name, rand_state=seed, num_threads=cores,
                               logger=logger).clone()
                for t, logger, seed in zip(tasks, get_loggers_from_work_dir(str(work_dir), names),
                                           fork_seed(None, n=len(tasks)))]
    ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(work_dir), max_trials_global=trials,
                  num_trials_per_iter=per_iter, builder=builder, runner=runner, database=db, cost_model="xgb",
                  measure_callbacks=list(ms.measure_callback.MeasureCallback.create("default")) + [cb],
                  task_scheduler="gradient")


def _seed_defaults(tasks, target, db, builder, runner) -> dict:
    """Measure the default schedule of every kernel task, put it in ``db`` as the search's starting point
    (:func:`.space.seed_default`) and return ``{task name: its knob space}`` (:func:`.space.knob_space`) for
    the kernels whose default schedule has knobs. The others, and the static operators (whose default schedule
    is not a trace), keep MetaSchedule's own space."""
    from .measure import measure
    from .space import default_schedule_of, knob_count, knob_space, knob_trace, seed_default

    kernels = [t for t in tasks if t.kernel != "static_op"]
    times = measure([default_schedule_of(t, target).mod["main"] for t in kernels], target, builder, runner)
    for t, ms_ in zip(kernels, times):
        if ms_ is not None:
            seed_default(db, t, target, ms_)
    traces = {t.name: knob_trace(t, target) for t in kernels}
    return {name: knob_space(trace) for name, trace in traces.items() if knob_count(trace)}


def _update_manifest(manifest, tasks, known, dt, trials, no_measure, source) -> dict:
    import tvm

    for t in tasks:
        known[t.key] = {**known.get(t.key, {}), **t.to_json()}
    return {
        "device": dt.device,
        "target": str(dt.target),
        "host_cpu": str(tvm.target.codegen.llvm_get_system_cpu()) if dt.device == "local" else None,
        "tvm_version": tvm.__version__,
        "trials": int(manifest.get("trials", 0)) + (0 if no_measure else int(trials)),
        "measured": (not no_measure) or bool(manifest.get("measured", False)),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "sources": sorted(set(manifest.get("sources", [])) | ({source} if source else set())),
        "tasks": sorted(known.values(), key=lambda e: e["key"]),
    }


def summary_table(manifest: dict, tasks: list | None = None) -> str:
    """Per task at its tuning size P, by predicted time: the predicted ms per image in the networks (and
    whether the search reached it), TVM's unscheduled function, the default schedule, the best tuned record
    (replayed as ``compile`` uses it), the speedup of tuned over default and what compile uses."""
    keys = None if tasks is None else {t.key for t in tasks}

    def ms_(v):
        return "-" if v is None else f"{v:.4f}"

    rows = [("task", "P", "predicted ms/image", "unscheduled ms", "default ms", "tuned ms", "default/tuned", "uses")]
    entries = [e for e in manifest.get("tasks", []) if keys is None or e["key"] in keys]
    for e in sorted(entries, key=lambda e: -(e.get("predicted_ms") or 0.0)):
        u, t = e.get("untuned_ms"), e.get("tuned_ms")
        pred = e.get("predicted_ms")
        rows.append((e["name"], "-" if e.get("P") is None else str(e["P"]),
                     "-" if pred is None else f"{pred:.3f}" + ("" if e.get("searched", True) else " (not searched)"),
                     ms_(e.get("unscheduled_ms")), ms_(u), ms_(t), f"{u / t:.2f}x" if u and t else "-",
                     e.get("chosen", "-")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)
