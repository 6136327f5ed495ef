"""Whole-network benchmark: a LAS model compiled by our pipeline against its static counterpart compiled the
same way, PyTorch eager (static and LAS), the sparse PyTorch execution and, on request, the static model in
ONNX Runtime or OpenVINO (:mod:`~lasnet_tvm.benchmarks.baselines`), on the same images. Every variant is checked
against PyTorch (:func:`check_outputs`) before all are timed in the same interleaved rounds.

A model comes from a ``model.pt`` or is built with random weights; for the latter, every masker's bias is set
so that the block is active on about ``rate`` of the patches of the benchmark images (the activation rate of a
trained model depends on its input; a random one has none to speak of).
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import re
import tempfile
import time

import numpy as np
import torch

from lasnet_tvm.archs import format_granularity
from lasnet_tvm.compiler import CompiledModel, build_target, compile_model
from lasnet_tvm.compiler.artifact import CallProfiler
from lasnet_tvm.models import LASNet, build_model
from lasnet_tvm.models.folded import fold_block
from lasnet_tvm.models.masker import patch_pool
from lasnet_tvm.models.sparse import SparseLASNet
from lasnet_tvm.records import provenance
from lasnet_tvm.timing import time_interleaved
from lasnet_tvm.train.data import SyntheticShapes

from .baselines import build as build_baselines
from .baselines import check_available
from .block import check_errors, rel_err


@torch.no_grad()
def calibrate_maskers(model: LASNet, x: torch.Tensor, rate: float) -> None:
    """Shift every masker's bias so that about ``rate`` of its patches are active on ``x`` (eval mode)."""
    model.eval()
    h = model.forward_stem(x)
    for block in model.blocks:
        s = block.spec
        fb = fold_block(block)
        diff = torch.einsum("bchw,c->bhw", patch_pool(h, s.S * s.stride), fb.wm) + fb.bm
        if rate >= 1.0:
            shift = diff.min() - 1.0
        elif rate <= 0.0:
            shift = diff.max() + 1.0
        else:  # patches at or above this quantile stay active
            shift = torch.quantile(diff.flatten(), 1.0 - rate)
        block.masker.conv2.bias[0] -= shift.item()
        h, _ = block(h)


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    data = SyntheticShapes(n, size, 6, seed=seed, split="val")
    return torch.stack([data[i][0] for i in range(n)])


def kernel_family(symbol: str) -> str:
    """A VM call's operator: ``masker_conv1x1_1024_256_14_2_14_1_1`` -> ``masker_conv1x1``, ``zeros3`` -> ``zeros``."""
    head = re.match(r"(.+?)_\d", symbol)  # a kernel's name, then its shape parameters
    return head.group(1) if head else re.sub(r"\d+$", "", symbol)  # an operator with a numbered copy


def kernel_breakdown(models: dict[str, CompiledModel], images: list[np.ndarray], rounds: int) -> dict:
    """Per-call profiles (:class:`~lasnet_tvm.compiler.artifact.CallProfiler`) of several compiled models run
    alternately, each round in a fresh random order, on the same images.

    Returns, per model, the instrumented total, the time per operator family (:func:`kernel_family`) and per VM
    call symbol, in milliseconds per image.
    """
    order, rng = list(models), random.Random(0)
    with contextlib.ExitStack() as stack:
        profs = {k: stack.enter_context(CallProfiler(m)) for k, m in models.items()}
        for _ in range(rounds):
            rng.shuffle(order)
            for k in order:
                for x in images:
                    models[k]._call(x)
    out = {}
    for k, prof in profs.items():
        calls = prof.summary(len(images) * rounds)
        families: dict[str, float] = {}
        for sym, v in calls.items():
            families[kernel_family(sym)] = families.get(kernel_family(sym), 0.0) + v["ms"]
        out[k] = {"instrumented_ms": sum(v["ms"] for v in calls.values()),
                  "families_ms": dict(sorted(families.items(), key=lambda kv: -kv[1])), "calls": calls}
    return out


@torch.no_grad()
def check_outputs(model: LASNet, static_model: LASNet, sparse: SparseLASNet | None, x: torch.Tensor,
                  outputs: dict[str, np.ndarray]) -> dict[str, float]:
    """Relative errors (:func:`~lasnet_tvm.benchmarks.block.rel_err`) of every timed variant on ``x``.

    References: the LAS model in PyTorch (``torch_las_dense``) for the compiled LAS logits (``outputs["las"]``)
    and the sparse PyTorch execution; the PyTorch static model for every other entry of ``outputs`` (the
    compiled static model, the static model in other runtimes); and the LAS model with every masker forced on
    (every patch active) for the PyTorch static model itself, which must be the same network without its
    maskers (SE included).

    Raises
    ------
    LasnetError
        A variant differs from its reference by more than :data:`~lasnet_tvm.benchmarks.block.TOLERANCE`,
        naming the variant and its error.
    """
    ref, ref_static = model(x), static_model(x)
    all_on = copy.deepcopy(model)
    calibrate_maskers(all_on, x, 1.0)
    errs = {k: rel_err(torch.from_numpy(np.asarray(v)), ref if k == "las" else ref_static) for k, v in outputs.items()}
    errs["torch_static"] = rel_err(ref_static, all_on(x))
    if sparse is not None:
        errs["torch_sparse"] = rel_err(sparse(x), ref)
    check_errors(errs, "bench model")
    return errs


def las_key(rate: float, multi: bool) -> str:
    """The timing key of the compiled LAS model at ``rate``: ``las``, or ``las@0.25`` when several rates run."""
    return f"las@{rate:g}" if multi else "las"


def _placements(masker: str, spec, rate: float) -> list:
    """The masker placement of each block of a LAS model for ``bench model --masker`` (``auto``: the predictor's
    choice on this machine's profile at ``rate``)."""
    from lasnet_tvm.block_plan import MaskerPlacement

    if masker != "auto":
        return [MaskerPlacement(masker)] * len(spec.blocks)
    from lasnet_tvm.predictor.profiles import get_profile
    from lasnet_tvm.predictor.search import choose_masker

    return choose_masker(spec, get_profile("local"), rate)[0]


def run(arch: str = "las_resnet50", granularity: str = "4-4-2-1", input_size: int = 224, width_mult: float = 1.0,
        rate: float = 0.5, model: LASNet | None = None, n_images: int = 4, repeats: int = 5, threads: int = 2,
        database=None, breakdown: bool = False, save_model: str | None = None, baselines=(),
        rates=None, masker: str = "fused") -> dict:
    """Compile, check and time; returns the JSON-able result. ``breakdown``: also profile both compiled models
    per VM call (:func:`kernel_breakdown`, ``repeats`` rounds, after the timing). ``save_model``: also write the
    model (with its calibrated maskers) there, for ``lasnet-tvm compile`` and ``bench compare``. ``baselines``:
    also the static model in these runtimes (:mod:`~lasnet_tvm.benchmarks.baselines`), with TVM's thread count,
    checked and timed in the same rounds. ``rates``: several activation rates of the random model in one run
    (the same weights, the maskers set per rate; one compiled LAS model per rate, timed as ``las@R`` in the same
    interleaved rounds as the static variants, which run once); the result then has a ``per_rate`` list.
    ``masker``: the LAS models' masker placement (``fused``, ``separate``, or ``auto``: per block the one this
    machine's profile prices lower at the model's rate target, as ``compile --masker auto`` does); the result's
    ``masker`` lists each LAS model's placement per block.

    Raises
    ------
    LasnetError
        A timed variant's output differs from its PyTorch reference (:func:`check_outputs`), or ``rates`` with
        a given ``model``.
    """
    from lasnet_tvm.errors import LasnetError

    baselines = check_available(baselines)
    multi = rates is not None and len(rates) > 1
    if multi and model is not None:
        raise LasnetError("several rates need the random model: a model.pt has the rate its maskers give")
    if multi and (breakdown or save_model):
        raise LasnetError("--breakdown and --save-model take one rate")
    rate_list = list(rates) if rates is not None else [rate]
    torch.set_num_threads(threads)
    tvm_threads = int(os.environ.get("TVM_NUM_THREADS") or threads)
    if model is None:
        base = build_model(arch, granularity, input_size, 1000, width_mult).eval()
        x = images(n_images, input_size)
        las_models = {}
        for r in rate_list:
            las_models[r] = copy.deepcopy(base)
            calibrate_maskers(las_models[r], x, r)
        if save_model:
            from lasnet_tvm.checkpoint import save_checkpoint

            save_checkpoint(save_model, las_models[rate_list[0]], {"source": f"bench model --rate {rate_list[0]}"})
    else:
        x = images(n_images, model.spec.input_size)
        las_models = {rate_list[0]: model.eval()}
    model = las_models[rate_list[0]]
    s = model.spec
    target = build_target("llvm")
    compiled, compile_s, applied = {}, {}, {}
    placements = {las_key(r, multi): _placements(masker, m.spec, r) for r, m in las_models.items()}
    variants = [(las_key(r, multi), m, False) for r, m in las_models.items()] + [("static", model, True)]
    for name, net, static in variants:
        t0 = time.perf_counter()
        r = compile_model(net, target, static=static, database=database,
                          **({} if static else {"masker": placements[name]}))
        compile_s[name] = time.perf_counter() - t0
        compiled[name] = CompiledModel.from_executable(r.executable, r.manifest)
        applied[name] = r.manifest.get("tuned_schedules", {}).get("applied", [])
    xs = x.numpy()
    static_model = model.static_counterpart()
    singles = [xs[i : i + 1] for i in range(n_images)]
    with tempfile.TemporaryDirectory() as tmp:
        others = build_baselines(baselines, static_model, s.input_size, tvm_threads, tmp)
    static_outputs = {"static": compiled["static"].run(xs).logits,
                      **{k: np.concatenate([b.run(v) for v in singles]) for k, b in others.items()}}
    errs, measured_rate, rate_per_block, sparse = {}, {}, {}, None
    for r, net in las_models.items():
        key = las_key(r, multi)
        las = compiled[key].run(xs)
        measured_rate[key] = float(las.rates.mean())
        rate_per_block[key] = [float(v) for v in las.rates.mean(axis=0)]
        sp = SparseLASNet(net) if net.se_pool == "active" and not multi else None  # dense SE pooling: no sparse run
        sparse = sparse or sp
        outs = {"las": las.logits, **(static_outputs if r == rate_list[0] else {})}
        for k, v in check_outputs(net, static_model, sp, x, outs).items():
            errs[key if k == "las" else k] = v
    tsingles = [x[i : i + 1] for i in range(n_images)]

    def over_images(f, inputs):
        return lambda: [f(v) for v in inputs]

    calls = {k: (compiled[k]._call, singles) for k in compiled}  # name: (one image's call, the images)
    calls.update({"torch_static": (static_model, tsingles), "torch_las_dense": (model, tsingles)})
    if sparse is not None:
        calls["torch_sparse"] = (sparse, tsingles)
    calls.update({k: (b.run, singles) for k, b in others.items()})
    fns = {k: over_images(f, inputs) for k, (f, inputs) in calls.items()}
    # each turn starts with one untimed image: the runtimes alternate, and the previous one's threads still spin
    settle = {k: over_images(f, inputs[:1]) for k, (f, inputs) in calls.items()}
    with torch.no_grad():
        t = time_interleaved(fns, repeats=repeats, warmup=1, batch=1, settle=settle)
    per_image = {k: v["median_ms"] / n_images for k, v in t.items()}
    extra = {"breakdown": kernel_breakdown(compiled, singles, repeats)} if breakdown else {}
    first = las_key(rate_list[0], multi)
    if multi:
        extra["per_rate"] = [
            {"rate_target": r, "rate": measured_rate[las_key(r, True)], "ms": per_image[las_key(r, True)],
             "speedup_vs_static": per_image["static"] / per_image[las_key(r, True)],
             "speedup_vs_torch_static": per_image["torch_static"] / per_image[las_key(r, True)],
             **{f"speedup_vs_{k}": per_image[k] / per_image[las_key(r, True)] for k in others}}
            for r in rate_list]
    return {
        "benchmark": "model",
        "device": "local",
        **provenance(),
        "arch": s.arch,
        "granularity": format_granularity(s.granularity, [sum(1 for b in s.blocks if b.stage == k) for k in range(1, 5)]),
        "input_size": s.input_size,
        "width_mult": s.width_mult,
        "images": n_images,
        "repeats": repeats,
        "threads": threads,
        "tuned": database is not None,
        "tuned_applied": applied,
        "masker": {k: [str(p) for p in v] for k, v in placements.items()},
        "rate": measured_rate[first],
        "rate_per_block": rate_per_block[first],
        "ms": per_image,
        "speedup_vs_static": per_image["static"] / per_image[first],
        "speedup_vs_torch_static": per_image["torch_static"] / per_image[first],
        "compile_s": compile_s,
        "baselines": {k: {**b.info, "ms": per_image[k], "las_latency_ratio": per_image[first] / per_image[k],
                          "static_latency_ratio": per_image["static"] / per_image[k]} for k, b in others.items()},
        "max_rel_err": errs,
        "timings": t,
        **extra,
    }


def format_table(res: dict) -> str:
    ms = res["ms"]
    rows = [f"{res['arch']} {res['granularity']} @{res['input_size']} (rate {res['rate']:.2f}), ms per image:"]
    for k, v in ms.items():
        rows.append(f"  {k:16s} {v:9.2f}")
    for r in res.get("per_rate", []):
        others = "".join(f"; vs {k[len('speedup_vs_'):]} {v:.2f}x" for k, v in r.items()
                         if k.startswith("speedup_vs_") and k not in ("speedup_vs_static", "speedup_vs_torch_static"))
        rows.append(f"  rate {r['rate_target']:g} (measured {r['rate']:.2f}): LAS {r['ms']:.2f} ms, vs static "
                    f"compiled {r['speedup_vs_static']:.2f}x; vs PyTorch static {r['speedup_vs_torch_static']:.2f}x"
                    + others)
    if "per_rate" not in res:
        rows.append(f"  LAS vs static compiled: {res['speedup_vs_static']:.2f}x; vs PyTorch static: "
                    f"{res['speedup_vs_torch_static']:.2f}x; compile {res['compile_s']['las']:.1f} s")
    for k, b in res.get("baselines", {}).items():
        rows.append(f"  latency / {k} {b['version']} static ({b['threads']} threads): "
                    f"LAS {b['las_latency_ratio']:.2f}, static compiled {b['static_latency_ratio']:.2f}")
    if "breakdown" in res:
        b = res["breakdown"]
        rows.append(f"per-call profile (VM instrumentation), ms per image: LAS {b['las']['instrumented_ms']:.2f}, "
                    f"static {b['static']['instrumented_ms']:.2f}")
        for name in ("las", "static"):
            top = list(b[name]["families_ms"].items())[:8]
            rows.append(f"  {name:7s}" + ", ".join(f"{k} {v:.2f}" for k, v in top))
    return "\n".join(rows)
