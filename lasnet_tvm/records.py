"""What every result file records (the machine, the software versions, the source revision, the time and the
load) and the JSON writer that puts it on disk atomically.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

from .fsutil import atomic_write

_PACKAGE_DIR = Path(__file__).resolve().parent


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (or platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """Host, OS, CPU model, core count and TVM_NUM_THREADS."""
    return {"hostname": platform.node(), "system": platform.platform(), "machine": platform.machine(),
            "cpu": cpu_model(), "cores": os.cpu_count(),
            "tvm_num_threads": os.environ.get("TVM_NUM_THREADS")}


def versions() -> dict:
    """Versions of python, tvm, tvm-ffi, torch and numpy."""
    import numpy
    import torch
    import tvm

    try:
        import tvm_ffi

        ffi = getattr(tvm_ffi, "__version__", "unknown")
    except ImportError:
        ffi = None
    return {"python": platform.python_version(), "tvm": tvm.__version__, "tvm_ffi": ffi,
            "torch": torch.__version__, "numpy": numpy.__version__}


def _git(*args: str, package_dir: Path = _PACKAGE_DIR) -> str | None:
    """Output of ``git args`` in the source checkout of this package, or None when it does not run from one.

    An installed copy (``site-packages/lasnet_tvm``) may lie inside some other repository (a pyenv or conda
    prefix under git): only a checkout whose top level holds this package and ``setup.py`` counts.
    """
    try:
        top = subprocess.run(["git", "-C", str(package_dir), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=10)
        if top.returncode != 0:
            return None
        root = Path(top.stdout.strip()).resolve()
        if root != package_dir.parent or not (root / "setup.py").is_file():
            return None
        out = subprocess.run(["git", "-C", str(package_dir), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def git_revision(package_dir: Path = _PACKAGE_DIR) -> str | None:
    """``git describe --always --dirty`` of the source checkout, or None outside one."""
    out = _git("describe", "--always", "--dirty", package_dir=package_dir)
    return (out or "").strip() or None


def git_dirty_files(package_dir: Path = _PACKAGE_DIR) -> list[str] | None:
    """Tracked files with uncommitted changes (``git status --porcelain -uno``), or None outside a checkout."""
    out = _git("status", "--porcelain", "-uno", package_dir=package_dir)
    return None if out is None else [line[3:] for line in out.splitlines()]


def provenance() -> dict:
    """The fields every result file carries: ``machine``, ``versions``, ``git_revision``, ``time`` (now, ISO 8601)
    and ``load_average`` (1/5/15-minute load averages now: how busy the machine was)."""
    return {"machine": machine_info(), "versions": versions(), "git_revision": git_revision(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "load_average": os.getloadavg()}


def default_target() -> str:
    """``"cuda"`` when TVM sees a CUDA GPU, else ``"llvm"``."""
    try:
        import tvm

        return "cuda" if tvm.cuda(0).exist else "llvm"
    except Exception:  # no CUDA runtime at all
        return "llvm"


def device_name(target_kind: str, threads: int) -> str:
    """Words for the measuring device: the GPU's name, or the CPU model and thread count."""
    if target_kind == "cuda":
        import torch

        return f"cuda ({torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'GPU'})"
    return f"llvm ({cpu_model()}, {threads} threads)"


def run_header(benchmark: str, target, threads: int, repeats: int, hw, note: str | None = None,
               load_at_start: tuple | None = None) -> dict:
    """The fields a benchmark's JSON starts with (``bench fusion/rate/granularity``).

    ``target`` is the resolved TVM target; ``hw`` the :class:`HardwareProfile` of the predictions;
    ``load_at_start`` the 1/5/15-minute load averages when the run began (the header adds those at its end).
    """
    from dataclasses import asdict

    from .targets import target_kind

    kind = target_kind(target)
    profile = asdict(hw)
    profile.pop("description", None)
    return {"benchmark": benchmark, "device": device_name(kind, threads), "target": str(target),
            "target_kind": kind, "profile": profile, "threads": threads, "repeats": repeats,
            **provenance(), "git_dirty_files": git_dirty_files(), "note": note,
            "load_average": {"start": load_at_start, "end": os.getloadavg()}}


def _busy_cpu_seconds() -> float | None:
    """CPU seconds all CPUs spent busy since boot (``/proc/stat``; None elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    # cpu user nice system idle iowait irq softirq steal ...: everything but idle and iowait is busy
    ticks = [int(v) for v in fields[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """``with OtherLoad() as o: ...`` then ``o.share``: the share of the CPUs that *other* processes kept busy
    meanwhile, ``(busy CPU time of the machine - this process's) / (wall time x CPUs)``, 0 on a quiet machine
    whatever this process itself runs (a load average counts the measurement's own threads). None without
    ``/proc/stat``."""

    share: float | None = None

    def __enter__(self) -> "OtherLoad":
        self._t, self._own, self._busy = time.monotonic(), sum(os.times()[:2]), _busy_cpu_seconds()
        return self

    def __exit__(self, *exc) -> None:
        busy = _busy_cpu_seconds()
        wall = time.monotonic() - self._t
        if busy is None or self._busy is None or wall <= 0:
            return
        own = sum(os.times()[:2]) - self._own
        self.share = max(0.0, (busy - self._busy - own) / (wall * (os.cpu_count() or 1)))


def write_json(path: str | os.PathLike, data: dict) -> Path:
    """Write ``data`` as indented JSON to ``path`` (parent folders created), atomically: an earlier file there is
    replaced only by a complete new one."""
    return atomic_write(path, json.dumps(data, indent=2) + "\n", "results")
