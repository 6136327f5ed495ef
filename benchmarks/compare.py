"""Compiled libraries against each other (``lasnet-tvm bench compare a.so b.so ...``): the way to judge a change
to the compiler on a noisy machine. Compile the same ``model.pt`` before and after the change (or LAS against
``--static``), then time the libraries in one process, interleaved, on the same images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lasnet_tvm.compiler.artifact import CompiledModel
from lasnet_tvm.errors import LasnetError
from lasnet_tvm.records import provenance
from lasnet_tvm.runner import check_input_shape
from lasnet_tvm.timing import time_interleaved

from .block import check_errors, rel_err
from .model import images


def run(libraries: list[str | Path], x: np.ndarray | None = None, n_images: int = 4, repeats: int = 25,
        model=None) -> dict:
    """Time ``libraries`` (at least two) on ``x`` (default: ``bench model``'s ``n_images`` synthetic images),
    batch 1, each round in a fresh random order; returns the JSON-able result with each library's median
    milliseconds per image, its speedup over the first (ratio of medians) and the median of the per-round
    ratios (``paired_speedup_vs_first``, robust to slow drifts of a shared machine).

    With ``model`` (the :class:`~lasnet_tvm.models.LASNet` the libraries were compiled from), every library is
    first checked against it in PyTorch: a LAS library against the model, a ``--static`` one against its static
    counterpart (``max_rel_err``).

    Raises
    ------
    LasnetError
        Fewer than two libraries, different input sizes, or (with ``model``) a library whose logits differ from
        PyTorch's by more than :data:`~lasnet_tvm.benchmarks.block.TOLERANCE`.
    """
    if len(libraries) < 2:
        raise LasnetError("bench compare: give at least two compiled libraries")
    names = [str(p) for p in libraries]
    if len(set(names)) != len(names):
        raise LasnetError("bench compare: a library is listed twice")
    models = {name: CompiledModel.load(name) for name in names}
    sizes = {name: m.input_size for name, m in models.items()}
    if len(set(sizes.values())) != 1:
        raise LasnetError("bench compare: the libraries take different input sizes: "
                          + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    if x is None:
        x = images(n_images, sizes[names[0]]).numpy()
    for name in names:
        check_input_shape(x, sizes[name], name)
    singles = [np.ascontiguousarray(x[i : i + 1], dtype=np.float32) for i in range(x.shape[0])]
    outputs = {name: m.run(x) for name, m in models.items()}
    ref = outputs[names[0]].logits
    errs = check_libraries(model, models, outputs, x) if model is not None else None
    t = time_interleaved({name: (lambda m=m: [m._call(v) for v in singles]) for name, m in models.items()},
                         repeats=repeats, warmup=1, batch=1)
    ms = {name: t[name]["median_ms"] / len(singles) for name in names}
    first = np.array(t[names[0]]["samples_ms"])
    paired = {name: float(np.median(first / np.array(t[name]["samples_ms"]))) for name in names}
    return {
        "benchmark": "compare",
        **provenance(),
        "images": len(singles),
        "repeats": repeats,
        "libraries": [{
            "path": name,
            "manifest": {k: models[name].manifest.get(k) for k in
                         ("arch", "granularity", "input_size", "static", "fusion", "tuned", "lasnet_tvm", "tvm")},
            "ms": ms[name],
            "speedup_vs_first": ms[names[0]] / ms[name],
            "paired_speedup_vs_first": paired[name],  # median over rounds of the ratio within each round
            "rate": float(outputs[name].rates.mean()),
            "max_abs_logit_diff_vs_first": float(np.abs(outputs[name].logits - ref).max()),
        } for name in names],
        "max_rel_err": errs,
        "timings": t,
    }


def check_libraries(model, models: dict, outputs: dict, x: np.ndarray) -> dict[str, float]:
    """Relative error of each library's logits against ``model`` in PyTorch (its static counterpart for a
    library compiled ``--static``); raises a LasnetError naming the libraries that differ."""
    import torch

    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    with torch.no_grad():
        refs = {False: model.eval()(xt), True: model.static_counterpart()(xt)}
    errs = {name: rel_err(torch.from_numpy(outputs[name].logits), refs[bool(m.manifest.get("static"))])
            for name, m in models.items()}
    check_errors(errs, "bench compare")
    return errs


def format_table(res: dict) -> str:
    rows = [f"ms per image (batch 1, median of {res['repeats']} interleaved passes over {res['images']} images):"]
    for lib in res["libraries"]:
        kind = "static" if lib["manifest"].get("static") else "LAS"
        rows.append(f"  {lib['path']}  {lib['ms']:8.2f}  {lib['speedup_vs_first']:5.2f}x (paired "
                    f"{lib['paired_speedup_vs_first']:.2f}x)  ({kind}, rate "
                    f"{lib['rate']:.2f}, logits differ from the first by {lib['max_abs_logit_diff_vs_first']:.1e})")
    return "\n".join(rows)
