"""The per-device tuning database: MetaSchedule JSON files, a manifest, a lock, and schedule lookup.

A work dir (``schedules/<device>/``) holds ``database_workload.json`` and ``database_tuning_record.json``
(MetaSchedule's :class:`JSONDatabase`, one JSON object per line, appended: a run cut short leaves at most an
unterminated last line, which :func:`check_database_files` drops), ``manifest.json`` (replaced atomically) and,
while a process tunes, ``.lock``; an export replaces each of its files atomically; :func:`apply_trace` replays a record onto a kernel with a symbolic patch count.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import LasnetError
from .tasks import specialize  # noqa: F401 - re-exported

DB_FILES = ("database_workload.json", "database_tuning_record.json")
MANIFEST = "manifest.json"


def check_database_files(work_dir: Path, repair_tail: bool = False) -> None:
    """Check that every line of the database files is JSON.

    A last line without its newline is a write cut short by an interrupted run (the batch in flight): with
    ``repair_tail`` it is dropped (the file is truncated after the last complete line), else it is an error.

    Raises
    ------
    LasnetError
        A malformed line (file and line named); earlier records are left untouched.
    """
    for name in DB_FILES:
        path = Path(work_dir) / name
        if not path.exists():
            continue
        data = path.read_bytes()
        lines = data.split(b"\n")
        complete = len(lines) - 1  # the last element is "" when the file ends with a newline
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                json.loads(line)
                if i < complete:
                    continue
            except ValueError:
                if i < complete:
                    raise LasnetError(f"corrupt tuning database {path}: line {i + 1} is not valid JSON; "
                                      f"move the file away or re-tune") from None
            # unterminated last line (valid JSON or not): a write cut short
            if not repair_tail:
                raise LasnetError(f"corrupt tuning database {path}: last line is incomplete")
            with open(path, "r+b") as fh:
                fh.truncate(len(data) - len(line))


def open_database(work_dir: Path, repair_tail: bool = False):
    """The :class:`ms.database.JSONDatabase` of ``work_dir`` (checked first; see :func:`check_database_files`)."""
    from tvm.s_tir import meta_schedule as ms

    work_dir = Path(work_dir)
    check_database_files(work_dir, repair_tail)
    try:
        return ms.database.JSONDatabase(work_dir=str(work_dir), module_equality="structural")
    except Exception as e:  # noqa: BLE001 - TVM raises multi-line errors on a bad record
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise LasnetError(f"corrupt tuning database in {work_dir}: {first[:200]}") from None


class WorkDirLock:
    """An exclusive ``flock`` on ``<work_dir>/.lock``: two processes never tune one device at once."""

    def __init__(self, work_dir: Path):
        self.path = Path(work_dir) / ".lock"
        self.fh = None

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "a+")
        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.close()
            self.fh = None
            raise LasnetError(f"another process is tuning into {self.path.parent} (lock {self.path} held)") from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(f"{os.getpid()}\n")
        self.fh.flush()
        return self

    def __exit__(self, *exc):
        import fcntl

        if self.fh is not None:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_UN)
            self.fh.close()
            self.fh = None


def read_manifest(work_dir: Path) -> dict:
    path = Path(work_dir) / MANIFEST
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise LasnetError(f"corrupt manifest {path}: not valid JSON") from None


def write_manifest(work_dir: Path, manifest: dict) -> None:
    """Write ``manifest.json`` atomically (:func:`lasnet_tvm.fsutil.atomic_write`)."""
    from ..fsutil import atomic_write

    atomic_write(Path(work_dir) / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n", "manifest")


def workload_mod(func):
    """The IRModule MetaSchedule keys a task's workload by (as ``tune_tir`` normalizes it)."""
    from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

    return _normalize_mod(func)


def ranked_records(db, task) -> list:
    """Records of ``task`` in ``db``, fastest first (mean run time); unmeasured records (``run_secs`` None,
    written by ``--no-measure``) last; failed runs (MetaSchedule stores 1e10 s) left out."""
    mod = workload_mod(task.func())
    if not db.has_workload(mod):
        return []
    wl = db.commit_workload(mod)
    measured, unmeasured = [], []
    for rec in db.get_all_tuning_records():
        if not rec.workload.same_as(wl):
            continue
        if rec.run_secs is None or len(rec.run_secs) == 0:
            unmeasured.append(rec)
            continue
        t = sum(float(s) for s in rec.run_secs) / len(rec.run_secs)
        if t < 1e9:
            measured.append((t, len(measured), rec))
    return [r for _, _, r in sorted(measured, key=lambda x: x[:2])] + unmeasured


def workload_hash(mod) -> str:
    """A stable hash of a workload IRModule (structural: names of variables ignored)."""
    import hashlib

    import tvm_ffi

    return hashlib.sha1(str(int(tvm_ffi.structural_hash(mod)) & (2**64 - 1)).encode()).hexdigest()[:16]


def trace_id(trace) -> str:
    """A stable identifier of a trace (its decisions included)."""
    import hashlib

    text = json.dumps(_plain(trace.as_json(remove_postproc=False)), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _plain(obj):
    """JSON-able Python values of a trace's JSON (a trace fresh from the search holds ``IntImm`` and
    ``FloatImm`` decisions where the same trace read back from the database holds numbers)."""
    from tvm import tirx

    if isinstance(obj, tirx.IntImm):
        return int(obj.value)
    if isinstance(obj, tirx.FloatImm):
        return float(obj.value)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "items"):  # dict or ffi Map
        return {str(k): _plain(v) for k, v in obj.items()}
    if hasattr(obj, "__len__") and hasattr(obj, "__getitem__"):  # list, tuple or ffi Array
        return [_plain(v) for v in obj]
    return obj


def best_record(db, task, measured_only: bool = False):
    """The fastest record of ``task`` (an unmeasured one only if none is measured, unless ``measured_only``)."""
    recs = ranked_records(db, task)
    if not recs or (measured_only and not recs[0].run_secs):
        return None
    return recs[0]


REPLAY_VARIANTS = ("tiled", "unit")


def apply_trace(trace, func, variant: str = "tiled"):
    """Replay a tuned ``trace`` onto ``func`` (symbolic P allowed).

    A trace tuned at a fixed P samples constant tiles for the patch loop, which a symbolic extent cannot
    take. Each ``SamplePerfectTile`` of a loop whose extent is symbolic is dropped: its tiles become
    constants in the ``Split`` and the outermost one becomes ``None`` (inferred: ``ceil(P / inner)`` with a
    ``p < P`` guard), so the schedule serves every P. ``variant="tiled"`` keeps the tuned inner tiles;
    ``"unit"`` makes them 1 (no guard: TVM 0.27 sizes a cache buffer under a guarded symbolic loop wrongly,
    so some tiled replays do not compile). Raises if the trace does not replay.
    """
    from tvm import s_tir, tirx
    from tvm.s_tir.schedule import Instruction, Trace

    unit = variant == "unit"
    insts, decisions = list(trace.insts), dict(trace.decisions)
    for _ in range(len(insts) + 1):
        sch = s_tir.Schedule(func)
        hit: list = []

        def provider(inst, inputs, attrs, decision):
            if (inst.kind.name == "SamplePerfectTile" and not hit
                    and not isinstance(sch.get(inputs[0]).extent, tirx.IntImm)):
                hit.append(inst)
            return decision

        try:
            Trace(insts, decisions).apply_to_schedule(sch, remove_postproc=False, decision_provider=provider)
            _move_unroll_pragmas(sch)
            return sch.mod["main"]
        except Exception:
            if not hit:
                raise
        sample = hit[0]
        consts = list(zip(sample.outputs, [1 if unit else int(d) for d in decisions[sample]]))  # tuned tiles
        out = []
        for ins in insts:
            if ins.same_as(sample):
                continue
            args = list(ins.inputs)
            uses = [k for k, x in enumerate(args) if hasattr(x, "same_as") and any(x.same_as(o) for o, _ in consts)]
            if uses:
                for k in uses:
                    args[k] = tirx.IntImm("int32", next(v for o, v in consts if args[k].same_as(o)))
                if ins.kind.name == "Split" and uses[0] == 1:
                    args[1] = None  # outermost tile of the symbolic loop: inferred from P
                ins = Instruction(ins.kind, args, ins.attrs, ins.outputs)
            out.append(ins)
        insts = out
        decisions.pop(sample, None)
    raise RuntimeError("trace does not replay onto the symbolic function")


_UNROLL = ("pragma_auto_unroll_max_step", "pragma_unroll_explicit")


def _move_unroll_pragmas(sch) -> None:
    """Move auto-unroll pragmas from loops of symbolic extent to the loop right inside them.

    LLVM lowering of ``pragma_auto_unroll_max_step`` on a loop of symbolic extent fails; the pragma only
    bounds the unrolling of the loops it encloses, so the next loop down carries it equally well.
    """
    from tvm import tirx

    root = sch.get_sblock("root")
    pending = []
    for block in sch.get_child_blocks(root):
        loops = sch.get_loops(block)
        for i, rv in enumerate(loops):
            st = sch.get(rv)
            if isinstance(st.extent, tirx.IntImm) or not any(k in st.annotations for k in _UNROLL):
                continue
            vals = {k: st.annotations[k] for k in _UNROLL if k in st.annotations}
            pending.append((rv, loops[i + 1] if i + 1 < len(loops) else None, vals))
    for outer, child, vals in pending:
        if child is not None:
            have = sch.get(child).annotations
            for k, v in vals.items():
                if k not in have:
                    sch.annotate(child, k, v)
        have = sch.get(outer).annotations
        for k in vals:
            if k in have:
                sch.unannotate(outer, k)


def export_chosen(src: Path, dest: Path) -> dict:
    """Write to ``dest`` a database holding only the records ``src``'s manifest chose (``"chosen":
    "tuned"``) and a copy of the manifest; return it. This is what ships under ``schedules/<name>/``.

    Raises
    ------
    LasnetError
        ``src`` has no manifest, or a chosen record is missing from its database.
    """
    import tempfile

    from tvm.s_tir import meta_schedule as ms

    from ..fsutil import atomic_write, check_dir_writable

    src, dest = Path(src), Path(dest)
    if dest.resolve() == src.resolve():
        raise LasnetError(f"cannot export {src} onto itself: give another folder")
    manifest = read_manifest(src)
    if not manifest:
        raise LasnetError(f"{src} has no manifest.json: nothing to export")
    db = open_database(src)
    wanted = {(e["record"], e.get("workload")): e for e in manifest.get("tasks", []) if e.get("chosen") == "tuned"}
    check_dir_writable(dest, "exported schedules")
    # MetaSchedule writes the database in a scratch folder; each file then replaces dest's atomically
    # (workloads first, manifest last), so that a failed export leaves dest's earlier files whole
    with tempfile.TemporaryDirectory(prefix="lasnet-export-") as scratch:
        for name in DB_FILES:
            (Path(scratch) / name).write_text("")
        out = ms.database.JSONDatabase(work_dir=scratch, module_equality="structural")
        found = set()
        for rec in db.get_all_tuning_records():
            rid = (trace_id(rec.trace), workload_hash(rec.workload.mod))
            if rid in wanted and rid not in found and rec.run_secs:
                found.add(rid)
                wl = out.commit_workload(rec.workload.mod)
                out.commit_tuning_record(ms.database.TuningRecord(rec.trace, wl, rec.run_secs, rec.target,
                                                                  rec.args_info))
        missing = [wanted[r]["name"] for r in wanted if r not in found]
        if missing:
            raise LasnetError(f"chosen records missing from {src}: {', '.join(missing[:5])}")
        for name in DB_FILES:
            atomic_write(dest / name, (Path(scratch) / name).read_bytes(), "tuning database")
    write_manifest(dest, {**manifest, "exported_from": str(src)})
    return manifest


__all__ = ["WorkDirLock", "export_chosen", "open_database", "check_database_files", "best_record",
           "apply_trace", "trace_id", "workload_hash", "read_manifest", "write_manifest", "workload_mod", "specialize"]
