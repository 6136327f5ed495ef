"""Measuring latency on a shared machine: variants timed interleaved in one process, summarised by medians."""

from __future__ import annotations

import random
import statistics
import time
from typing import Callable


def summarize(samples_s: list[float]) -> dict:
    """Median and spread (min, quartiles, max) in milliseconds of per-call times in seconds."""
    ms = sorted(t * 1e3 for t in samples_s)
    q = statistics.quantiles(ms, n=4) if len(ms) >= 2 else [ms[0]] * 3
    return {"median_ms": statistics.median(ms), "min_ms": ms[0], "p25_ms": q[0], "p75_ms": q[2],
            "max_ms": ms[-1], "n": len(ms)}


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 3,
                     batch: int = 5, settle: dict[str, Callable[[], object]] | None = None) -> dict[str, dict]:
    """Time every function ``repeats`` times (per-call wall time), in round-robin batches.

    Variants take turns in batches of ``batch`` consecutive calls, so slow drifts of a shared machine hit
    all of them alike while each batch still runs warm (thread pools of torch and TVM do not fight call by
    call). Each round runs the variants in a fresh random order (seeded), so that none always follows the
    same one: a thread pool still spinning after its batch slows whichever batch comes next. ``settle`` gives,
    per variant, a call run untimed at the start of each of its batches, which absorbs that: when variants of
    different runtimes alternate (TVM, PyTorch's OpenMP, ONNX Runtime), the previous runtime's workers spin on
    after its call and the first call after a switch pays for it (on a 2-core VM, up to twice the time of a
    ResNet-50 image); a short call (one image) is enough. Returns
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
            if settle and k in settle and len(samples[k]) < repeats:
                settle[k]()
            for _ in range(min(batch, repeats - len(samples[k]))):
                t0 = time.perf_counter()
                fn()
                samples[k].append(time.perf_counter() - t0)
    return {k: {**summarize(v), "samples_ms": [round(t * 1e3, 4) for t in v]} for k, v in samples.items()}


def progress(total: int, desc: str):
    """A tqdm progress bar of a long measurement, on stderr (hidden when stderr is not a terminal)."""
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, disable=None, leave=False, dynamic_ncols=True)
