"""Tuned schedules for ``compile``: :class:`TunedSchedules` and the databases shipped under ``schedules/``.

Where a device's database lives: ``schedules/<name>/`` with ``<name>`` the profile name for a device
profile (``tx2``) and, for this machine (``--device local``) or any ``llvm`` target, the CPU's LLVM name
(``znver3``, ``skylake-avx512``: the ``mcpu`` TVM compiles for). ``lasnet-tvm compile`` uses the shipped
folder of its target's CPU (or of ``--device``) when one exists.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import LasnetError
from .database import REPLAY_VARIANTS, apply_trace, open_database, ranked_records, read_manifest, trace_id
from .tasks import Task, symbolic_vars, task_key


def local_dir_name() -> str:
    """Folder name of this machine's schedules: its CPU's LLVM name."""
    from ..targets import host_cpu

    return host_cpu()


def device_dir_name(device: str) -> str:
    """Folder name under ``schedules/`` of ``device`` (``local``: this CPU's LLVM name)."""
    return local_dir_name() if device == "local" else device


def shipped_dir(target=None, device: str | None = None) -> Path | None:
    """The shipped ``schedules/<name>`` for ``device`` (a profile name or ``local``) or else for an llvm
    ``target`` (by its ``mcpu``); None where nothing is shipped."""
    from ..resources import schedules_dir

    name = None
    if device is not None:
        name = device_dir_name(device)
    elif target is not None and target.kind.name == "llvm" and "mcpu" in target.attrs:
        name = str(target.attrs["mcpu"])
    if not name:
        return None
    path = schedules_dir() / name
    return path if (path / "manifest.json").exists() else None


class TunedSchedules:
    """Tuned schedules of one device, as ``compile`` applies them (the compiler's
    :class:`~lasnet_tvm.compiler.passes.apply_tuned_schedules.ScheduleDatabase`).

    The manifest's choice per task is followed (``"chosen": "tuned"`` with the record checked and timed at
    tune time, or ``"default"``); tasks without a choice (databases written by ``--no-measure`` or by hand)
    get their best record that replays.

    Parameters
    ----------
    work_dir : str or Path
        A folder written by ``lasnet-tvm tune`` (MetaSchedule JSON database + ``manifest.json``).

    Raises
    ------
    LasnetError
        Missing folder or corrupt database files.
    """

    max_tries = 5

    def __init__(self, work_dir):
        self.work_dir = Path(work_dir)
        if not self.work_dir.is_dir():
            raise LasnetError(f"no tuned schedules at {self.work_dir}")
        self.manifest = read_manifest(self.work_dir)
        self.entries = {t["key"]: t for t in self.manifest.get("tasks", [])}
        self.db = open_database(self.work_dir)

    @property
    def device(self) -> str | None:
        return self.manifest.get("device")

    def describe(self) -> dict:
        """Where the schedules come from (for a compiled module's manifest)."""
        return {"dir": str(self.work_dir), "device": self.device, "host_cpu": self.manifest.get("host_cpu")}

    def query_schedule(self, kernel: str, params: dict, func, target=None):
        """``func`` (the LAS kernel ``kernel(**params)``) with its tuned schedule, or None (keep the default)."""
        entry = self.entries.get(task_key(kernel, params))
        if entry is None:
            return None
        task = Task(entry["kernel"], entry["params"], entry.get("P"), entry.get("num_patches"))
        return self._apply(entry, task, func, target)

    def query_static(self, func, target=None):
        """``func`` (a static operator) with the tuned schedule of its workload, or None."""
        from .static_ops import StaticTask, static_key

        entry = self.entries.get(static_key(func))
        if entry is None:
            return None
        return self._apply(entry, StaticTask(entry["params"]["op"], func), func, target)

    def _apply(self, entry: dict, task, func, target):
        chosen = entry.get("chosen")
        if chosen == "default":
            return None
        recs = ranked_records(self.db, task)
        tries = [(r, v) for r in recs[: self.max_tries] for v in REPLAY_VARIANTS]
        if chosen == "tuned":
            tries = [(r, entry.get("variant") or "tiled") for r in recs if trace_id(r.trace) == entry.get("record")]
        for rec, variant in tries:
            try:
                out = apply_trace(rec.trace, func, variant)
                if target is not None and symbolic_vars(func) and not (chosen == "tuned" and entry.get("checked")):
                    import tvm

                    tvm.compile(tvm.IRModule({"main": out}), target=target)  # host passes accept it?
            except Exception:  # noqa: BLE001 - try the next record, else the default schedule
                continue
            if chosen == "tuned" and entry.get("imported"):
                from ..compiler.passes.apply_tuned_schedules import IMPORTED_ATTR

                out = out.with_attr(IMPORTED_ATTR, str(entry["imported"]["offline"]))
            return out
        return None


def schedules_for(path=None, device: str | None = None, target_text: str = "llvm", use_shipped: bool = True):
    """:class:`TunedSchedules` of ``path``, else (``use_shipped``) the shipped ``schedules/<name>`` of
    ``device`` or of the llvm target's CPU, else None (default schedules)."""
    if path is not None:
        return TunedSchedules(path)
    if not use_shipped:
        return None
    if device is not None:
        return shipped_schedules(device=device)
    from ..targets import resolve_target

    return shipped_schedules(target=resolve_target(target_text))


def shipped_schedules(target=None, device: str | None = None) -> TunedSchedules | None:
    """:class:`TunedSchedules` of the shipped folder for ``device`` or ``target`` (see :func:`shipped_dir`)."""
    path = shipped_dir(target, device)
    return None if path is None else TunedSchedules(path)
