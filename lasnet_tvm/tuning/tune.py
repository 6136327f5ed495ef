"""``tune``: MetaSchedule tuning of a network's LAS kernels for one device, into ``schedules/<device>/``.

The tasks (see :mod:`.tasks`) are tuned together by MetaSchedule's gradient task scheduler, which shares
``trials`` across them, with the xgboost cost model. Measurements run on this machine (``--device local``)
or on a board behind a TVM RPC tracker. Results are appended to the device's JSON database (MetaSchedule
writes each measured batch as it completes); the manifest is rewritten atomically at the end.
"""

from __future__ import annotations

import datetime
import logging
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import LasnetError
from .database import WorkDirLock, best_record, open_database, read_manifest, write_manifest
from .tasks import Task, allocator_layouts

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


def check_tracker(host: str, port: int, key: str, timeout: float = 10.0) -> None:
    """Fail with a one-line error unless the tracker at ``host:port`` answers and knows ``key``."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise LasnetError(f"RPC tracker {host}:{port} does not answer ({e.strerror or e})") from None
    result: dict = {}

    def ask():
        try:
            from tvm import rpc

            result["summary"] = rpc.connect_tracker(host, port).summary()
        except Exception as e:  # noqa: BLE001
            result["error"] = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__

    th = threading.Thread(target=ask, daemon=True)
    th.start()
    th.join(timeout)
    if "summary" not in result:
        raise LasnetError(f"RPC tracker {host}:{port} does not answer ({result.get('error', 'timed out')})")
    queue = result["summary"].get("queue_info", {})
    if key not in queue or int(queue[key].get("free", 0)) < 1:
        free = ", ".join(f"{k} ({v.get('free', 0)} free)" for k, v in queue.items()) or "none"
        raise LasnetError(f"RPC tracker {host}:{port} has no free board with key {key!r}; keys: {free}")


def make_runner(tasks, tracker: str | None, key: str | None, timeout: float):
    """A LocalRunner, or an RPCRunner through ``tracker`` (``HOST:PORT``), with valid index arguments."""
    from tvm.s_tir import meta_schedule as ms

    from .tasks import IndexArgAllocator, RPCIndexArgAllocator

    layouts = allocator_layouts(tasks)
    cfg = ms.runner.EvaluatorConfig(number=3, repeat=3, min_repeat_ms=40, enable_cpu_cache_flush=False)
    if tracker is None:
        return ms.runner.LocalRunner(timeout_sec=timeout, evaluator_config=cfg,
                                     f_alloc_argument=IndexArgAllocator(layouts))
    host, port = parse_tracker(tracker)
    if not key:
        raise LasnetError("--tracker needs --key (the key the board's RPC server registered with)")
    check_tracker(host, port, key)
    rpc = ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=key, session_timeout_sec=timeout)
    return ms.runner.RPCRunner(rpc_config=rpc, evaluator_config=cfg, f_alloc_argument=RPCIndexArgAllocator(layouts),
                               max_workers=1)


def parse_tracker(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise LasnetError(f"bad --tracker {text!r}: expected HOST:PORT")
    return host, int(port)


def measure(funcs, target, builder, runner) -> list:
    """Run time (ms, mean of the runner's repeats) of each PrimFunc, None where build or run failed."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    inputs = [ms.builder.BuilderInput(tvm.IRModule({"main": f}), target) for f in funcs]
    built = builder.build(inputs)
    out = [None] * len(funcs)
    run_inputs, where = [], []
    for i, (f, b) in enumerate(zip(funcs, built)):
        if b.error_msg is None:
            run_inputs.append(ms.runner.RunnerInput(b.artifact_path, target.kind.name,
                                                    ms.arg_info.ArgInfo.from_prim_func(f)))
            where.append(i)
    for i, fut in zip(where, runner.run(run_inputs) if run_inputs else []):
        res = fut.result()
        if res.error_msg is None and res.run_secs:
            out[i] = 1e3 * sum(float(s) for s in res.run_secs) / len(res.run_secs)
    return out


def default_func(task: Task, gpu: bool):
    """``task``'s PrimFunc with its kernel module's default schedule (CPU or CUDA)."""
    from .. import kernels as K

    mod = K.get(task.kernel)
    sch = (mod.schedule_cuda if gpu else mod.schedule_cpu)(task.func(), **task.params)
    return sch


def _record_defaults(db, tasks, dt: DeviceTarget) -> None:
    """``--no-measure``: one unmeasured record (run_secs None) per task holding the default schedule."""
    from tvm.s_tir import meta_schedule as ms

    from .database import workload_mod

    for t in tasks:
        if best_record(db, t) is not None:
            continue
        sch = default_func(t, dt.gpu)
        wl = db.commit_workload(workload_mod(t.func()))
        db.commit_tuning_record(ms.database.TuningRecord(sch.trace, wl, None, dt.target,
                                                         ms.arg_info.ArgInfo.from_prim_func(t.func())))


def _quiet_metaschedule() -> None:
    for name in ("tvm.s_tir.meta_schedule", "tvm.meta_schedule"):
        logging.getLogger(name).setLevel(logging.WARNING)


def tune(tasks: list[Task], device: str, work_dir: Path | None = None, trials: int = 64,
         tracker: str | None = None, key: str | None = None, no_measure: bool = False,
         timeout: float = 120.0, progress: bool = True, source: str = "") -> dict:
    """Tune ``tasks`` for ``device`` into ``work_dir`` (default ``schedules/<device>``); return the manifest.

    Raises
    ------
    LasnetError
        Unknown device, nothing to measure on, tracker not answering, corrupt database, busy work dir.
    """
    import tvm
    from tvm.s_tir import meta_schedule as ms

    dt = device_target(device)
    work_dir = Path(work_dir) if work_dir is not None else Path("schedules") / device
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
        if manifest.get("device") not in (None, device):
            raise LasnetError(f"{work_dir} holds schedules of {manifest['device']!r}, not {device!r}")
        known = {t["key"]: t for t in manifest.get("tasks", [])}
        done = 0
        try:
            if no_measure:
                _record_defaults(db, tasks, dt)
            else:
                done = _measure_and_tune(tasks, dt, db, work_dir, known, trials, tracker, key, timeout, progress)
        finally:  # also on Ctrl-C: the records measured so far are in the database; describe them
            manifest = _update_manifest(manifest, db, tasks, known, dt, done, no_measure, source)
            write_manifest(work_dir, manifest)
    return manifest


def _measure_and_tune(tasks, dt, db, work_dir, known, trials, tracker, key, timeout, progress) -> int:
    """Measure the default schedules (once per task), then tune; return the trials run."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    _quiet_metaschedule()
    runner = make_runner(tasks, tracker, key, timeout)
    builder = ms.builder.LocalBuilder(timeout_sec=timeout)
    need = [t for t in tasks if known.get(t.key, {}).get("untuned_ms") is None]
    if need:
        for t, ms_ in zip(need, measure([default_func(t, dt.gpu).mod["main"] for t in need], dt.target,
                                        builder, runner)):
            known[t.key] = {**known.get(t.key, {}), "untuned_ms": ms_}
    if trials == 0:
        return 0
    from .progress import ProgressCallback

    cb = ProgressCallback(trials, len(tasks), enabled=progress)
    mod = tvm.IRModule({t.name: t.func() for t in tasks})
    cores = int(dt.target.attrs.get("num-cores", 1)) if not dt.gpu else "physical"
    try:
        ms.tune_tir(mod, dt.target, str(work_dir), max_trials_global=trials,  # logs go to work_dir/logs
                    num_trials_per_iter=min(64, max(4, trials // max(1, len(tasks)))),
                    builder=builder, runner=runner, database=db, cost_model="xgb",
                    measure_callbacks=list(ms.measure_callback.MeasureCallback.create("default")) + [cb],
                    task_scheduler="gradient", num_tuning_cores=cores)
    finally:
        cb.close()
    return cb.bar.n


def _update_manifest(manifest, db, tasks, known, dt, trials, no_measure, source) -> dict:
    import tvm

    for t in tasks:
        rec = best_record(db, t)
        entry = {**known.get(t.key, {}), **t.to_json()}
        if rec is not None and rec.run_secs:
            entry["tuned_ms"] = 1e3 * sum(float(s) for s in rec.run_secs) / len(rec.run_secs)
            entry["measured"] = True
        else:
            entry["tuned_ms"] = None
            entry["measured"] = False if rec is not None else entry.get("measured", False)
        known[t.key] = entry
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


def summary_table(manifest: dict, tasks: list[Task] | None = None) -> str:
    """Per task: untuned (default schedule) vs tuned latency and the speedup."""
    keys = None if tasks is None else {t.key for t in tasks}
    rows = [("task", "P", "untuned ms", "tuned ms", "speedup")]
    for e in manifest.get("tasks", []):
        if keys is not None and e["key"] not in keys:
            continue
        u, t = e.get("untuned_ms"), e.get("tuned_ms")
        rows.append((e["name"], "-" if e.get("P") is None else str(e["P"]),
                     "-" if u is None else f"{u:.4f}", "unmeasured" if t is None else f"{t:.4f}",
                     f"{u / t:.2f}x" if u and t else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)
