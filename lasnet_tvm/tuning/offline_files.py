"""Offline tuning files: the names and formats of ``offline.json`` and ``results.json``, reading them back
(:func:`load_results`), and the JSON forms of targets and traces they hold (see :mod:`.offline`)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import LasnetError

FORMAT = "lasnet-tvm/offline-tuning"
MANIFEST = "offline.json"
DEFAULT_ID = "default"  # the candidate id of each task's default schedule (candidate 0)
RESULTS_FORMAT = "lasnet-tvm/offline-results"


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise LasnetError(f"{path}: no such file")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise LasnetError(f"{path}: not valid JSON (truncated?); measure again or copy the whole file") from None
    if not isinstance(data, dict):
        raise LasnetError(f"{path}: not {what}")
    return data


def load_results(path, device: str) -> tuple[dict, dict]:
    """``(results, offline manifest)`` of ``path`` (a ``results.json`` in its offline folder), checked to belong
    together and to ``device``.

    Raises
    ------
    LasnetError
        Missing, truncated or foreign file; no manifest beside it; another build; another device.
    """
    path = Path(path)
    results = _read_json(path, "a results file of measure.py")
    if results.get("format") != RESULTS_FORMAT or not isinstance(results.get("tasks"), dict):
        raise LasnetError(f"{path}: not a results file of an offline folder's measure.py")
    mpath = path.parent / MANIFEST
    if not mpath.is_file():
        raise LasnetError(f"{path}: no {MANIFEST} beside it; keep results.json in the offline folder it was "
                          f"measured from")
    manifest = _read_json(mpath, "an offline tuning manifest")
    if manifest.get("format") != FORMAT:
        raise LasnetError(f"{mpath}: not an offline tuning manifest")
    if results.get("manifest_id") != manifest.get("id"):
        raise LasnetError(f"{path} is of another offline build (manifest id {results.get('manifest_id')}); "
                          f"{mpath} has id {manifest.get('id')}")
    for name, what in ((manifest.get("device"), mpath), (results.get("device"), path)):
        if name != device:
            raise LasnetError(f"{what}: measured for device {name!r}, not {device!r}")
    return results, manifest


def trace_from_json(task, trace_json):
    """The trace of a manifest (``as_json``) replayed onto ``task``'s workload."""
    from tvm import s_tir

    from .database import workload_mod

    sch = s_tir.Schedule(workload_mod(task.func()))
    s_tir.schedule.Trace.apply_json_to_schedule(trace_json, sch)
    return sch.trace


def target_json(target) -> dict:
    from ..compiler.pipeline import _plain

    return _plain(target.export())
