"""Helpers shared by the benchmarks: machine and version info, git revision, timing, safe JSON writing."""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable


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
    """Host, OS, CPU model and core count."""
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


def _git(*args: str) -> str | None:
    """Output of ``git args`` in this source checkout, or None when the package is not run from one.

    An installed copy (``site-packages/lasnet_tvm/benchmarks``) may lie inside some other repository (a pyenv
    or conda prefix under git): only a checkout whose top level holds this ``benchmarks/`` counts.
    """
    here = Path(__file__).resolve().parent
    try:
        top = subprocess.run(["git", "-C", str(here), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=10)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != here.parent:
            return None
        out = subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def git_revision() -> str | None:
    """``git describe --always --dirty`` of the source checkout, or None outside one."""
    out = _git("describe", "--always", "--dirty")
    return (out or "").strip() or None


def git_dirty_files() -> list[str] | None:
    """Tracked files with uncommitted changes (``git status --porcelain -uno``), or None outside a checkout."""
    out = _git("status", "--porcelain", "-uno")
    return None if out is None else [line[3:] for line in out.splitlines()]


def summarize(samples_s: list[float]) -> dict:
    """Median and spread (min, quartiles, max) in milliseconds of per-call times in seconds."""
    ms = sorted(t * 1e3 for t in samples_s)
    q = statistics.quantiles(ms, n=4) if len(ms) >= 2 else [ms[0]] * 3
    return {"median_ms": statistics.median(ms), "min_ms": ms[0], "p25_ms": q[0], "p75_ms": q[2],
            "max_ms": ms[-1], "n": len(ms)}


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 3,
                     batch: int = 5) -> dict[str, dict]:
    """Time every function ``repeats`` times (per-call wall time), in round-robin batches.

    Variants take turns in batches of ``batch`` consecutive calls, so slow drifts of a shared machine hit
    all of them alike while each batch still runs warm (thread pools of torch and TVM do not fight call by
    call). Each round runs the variants in a fresh random order (seeded), so that none always follows the
    same one: a thread pool still spinning after its batch slows whichever batch comes next. Returns
    per-name summaries (:func:`summarize`) with the samples in the order they were taken (``samples_ms``; with
    ``batch=1``, sample ``i`` of every variant comes from round ``i``).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    order, rng = list(fns), random.Random(0)
    while any(len(v) < repeats for v in samples.values()):
        rng.shuffle(order)
        for k in order:
            fn = fns[k]
            for _ in range(min(batch, repeats - len(samples[k]))):
                t0 = time.perf_counter()
                fn()
                samples[k].append(time.perf_counter() - t0)
    return {k: {**summarize(v), "samples_ms": [round(t * 1e3, 4) for t in v]} for k, v in samples.items()}


def write_json(path: str | os.PathLike, data: dict) -> Path:
    """Write ``data`` as JSON atomically: to a temporary file beside ``path``, then rename over it."""
    from lasnet_tvm.fsutil import atomic_write

    return atomic_write(path, json.dumps(data, indent=2, sort_keys=False) + "\n", "results")


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
    """The fields every ``bench fusion/rate/granularity`` JSON starts with.

    ``target`` is the resolved TVM target; ``hw`` the :class:`HardwareProfile` of the predictions;
    ``load_at_start`` the 1/5/15-minute load averages when the run began (the header adds those at its end).
    """
    from lasnet_tvm.targets import target_kind

    kind = target_kind(target)
    return {"benchmark": benchmark, "device": device_name(kind, threads), "target": str(target),
            "target_kind": kind, "profile": _profile_fields(hw), "threads": threads,
            "repeats": repeats, "machine": machine_info(), "versions": versions(), "git_revision": git_revision(),
            "git_dirty_files": git_dirty_files(), "note": note,
            "load_average": {"start": load_at_start, "end": os.getloadavg()},
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _profile_fields(hw) -> dict:
    """The profile's figures (name, source, PEs, lanes, clock, bandwidths, caches, efficiency)."""
    from dataclasses import asdict

    d = asdict(hw)
    d.pop("description", None)
    return d


def progress(total: int, desc: str):
    """A tqdm progress bar on stderr (hidden when stderr is not a terminal)."""
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, disable=None, leave=False, dynamic_ncols=True)
