"""The GPU check: run on a GPU machine with only Python, numpy and torch (no TVM, no network), from the upload
that ``benchmarks/gpu/prepare.py`` wrote; ``benchmarks/gpu/run.sh`` is the entry point.

    python benchmarks/gpu/gpu_check.py UPLOAD_DIR OUTDIR [--repeats 50] [--dry-run]

Measures, with CUDA events (warm-up first, interleaved repeats, medians):
- LAS-ResNet-50 compiled by lasnet-tvm (the upload's runtime-only TVM, random weights of the compiled model's
  shapes and statistics; its activation rate is what those weights give, read from the model's counts), our
  compiled static counterpart, and torch's cuDNN static ResNet-50 in FP32, TF32 and FP32 replayed from a CUDA
  graph;
- the static blocks of ResNet-50 and RegNetY-800MF stages 1-4 through torch's cuDNN in FP32 and TF32;
- the predictor's latencies for the GPU's hardware profile (prep.json) against the measured ones.
Writes OUTDIR/gpu_check.json and prints a short table last. ``--dry-run`` (no GPU): checks the upload, imports
its runtime-only TVM when the Python version matches, and runs the torch parts on the CPU at the reduced sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Timer:
    """Median milliseconds of callables, interleaved: CUDA events on a GPU, wall clock on the CPU."""

    def __init__(self, torch, cuda: bool):
        self.torch, self.cuda = torch, cuda

    def once(self, fn) -> float:
        if self.cuda:
            start, end = self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    def medians(self, calls: dict, repeats: int, warmup: int = 3) -> dict:
        for fn in calls.values():
            for _ in range(warmup):
                fn()
        times = {k: [] for k in calls}
        for _ in range(repeats):
            for k, fn in calls.items():
                times[k].append(self.once(fn))
        return {k: statistics.median(v) for k, v in times.items()}


def set_tf32(torch, on: bool) -> None:
    torch.backends.cudnn.allow_tf32 = on
    torch.backends.cuda.matmul.allow_tf32 = on


def torch_static_calls(torch, net, x, cuda: bool) -> dict:
    """FP32, TF32 and (on a GPU) CUDA-graph FP32 calls of a static torch module on ``x``."""

    def fp32():
        set_tf32(torch, False)
        net(x)

    def tf32():
        set_tf32(torch, True)
        net(x)

    calls = {"torch_fp32": fp32, "torch_tf32": tf32}
    if cuda:
        set_tf32(torch, False)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                net(x)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            net(x)
        calls["torch_fp32_graph"] = graph.replay
    return calls


class TvmModel:
    """A compiled library of the upload on the runtime-only TVM, with random weights from its statistics."""

    def __init__(self, tvm, device, lib: Path, weights: dict):
        from tvm.runtime.vm import VirtualMachine

        self.tvm, self.device = tvm, device
        self.manifest = json.loads(lib.with_suffix(".json").read_text())
        self.main = VirtualMachine(tvm.runtime.load_module(str(lib)), device)["main"]
        rng = np.random.default_rng(weights["seed"])
        p = weights["params"]
        self.params = [tvm.runtime.tensor(rng.normal(p[k]["mean"], p[k]["std"], p[k]["shape"]).astype(p[k]["dtype"]),
                                          device) for k in self.manifest.get("params", [])]

    def call(self, x):
        return self.main(x, *self.params)

    def rate(self, x) -> float:
        counts = self.call(x)[1].numpy()
        grids = np.array([g * g for g in self.manifest["grids"]], dtype=np.float64)
        return float(np.mean(counts / grids))


def load_runtime(upload: Path):
    """The upload's runtime-only TVM with its CUDA device API (libcudart from torch's nvidia wheels)."""
    os.environ["TVM_USE_RUNTIME_LIB"] = "1"
    os.environ.setdefault("TVM_FFI_DISABLE_TORCH_C_DLPACK", "1")
    sys.path.insert(0, str(upload / "python"))
    import tvm
    from tvm_ffi.libinfo import load_lib_ctypes

    return tvm, load_lib_ctypes


def compiled_models(upload: Path, prep: dict, x_np):
    tvm, load_lib_ctypes = load_runtime(upload)
    load_lib_ctypes("tvm", "tvm_runtime_cuda", "RTLD_LOCAL", extra_lib_paths=[upload / "python/tvm/lib"])
    device = tvm.cuda()
    if not device.exist:
        raise SystemExit("error: no CUDA device")
    bundle = json.loads((upload / "bundle.json").read_text())
    models = {"tvm_las": TvmModel(tvm, device, upload / prep["libraries"]["las"], bundle["random_weights"])}
    if "static" in prep["libraries"]:
        lib = upload / prep["libraries"]["static"]
        models["tvm_static"] = TvmModel(tvm, device, lib, json.loads((lib.parent / "random_weights.json").read_text()))
    x = tvm.runtime.tensor(x_np, device)
    return models, x, f"{device.device_name} (compute {device.compute_version})"


def block_benchmarks(torch, timer, dev, prep: dict, repeats: int, reduced: bool) -> list[dict]:
    """Static blocks (the second block of each stage, the first where a stage has one) through torch's cuDNN."""
    from lasnet_tvm.models import build_model

    m = prep["model"]
    rows = []
    for spec in prep["blocks"]:
        size, width = (m["input_size"], m["width"]) if reduced else (224, 1.0)
        net = build_model(spec["arch"], "4-4-2-1", size, 10, width).static_counterpart().eval().to(dev)
        stage = [b for b in net.blocks if b.spec.stage == spec["stage"]]
        blk = stage[1] if len(stage) > 1 else stage[0]
        s = blk.spec
        x = torch.randn(1, s.c_in, s.in_size, s.in_size, device=dev)
        calls = torch_static_calls(torch, lambda t: blk(t)[0], x, dev.type == "cuda")
        ms = timer.medians(calls, repeats)
        rows.append({"arch": spec["arch"], "stage": spec["stage"], "block": s.name, "c_in": s.c_in, "c_mid": s.c_mid,
                     "size": s.in_size, **{f"{k}_ms": v for k, v in ms.items()},
                     "las_block_ms": None, "las_block": "not measured: the upload carries whole-model libraries"})
        log(f"block {spec['arch']} stage {spec['stage']}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in ms.items()))
    return rows


def interpolate(grid: dict, rate: float) -> float:
    rs = sorted(float(r) for r in grid)
    return float(np.interp(rate, rs, [grid[str(r) if str(r) in grid else r] for r in rs]))


def run(upload: Path, outdir: Path, repeats: int, dry_run: bool) -> dict:
    sys.path.insert(0, str(REPO))  # lasnet_tvm.models (torch only) for the torch baselines
    import torch

    prep = json.loads((upload / "prep.json").read_text())
    for lib in prep["libraries"].values():
        if not (upload / lib).is_file():
            raise SystemExit(f"error: {upload / lib} missing: prepare the upload again")
    cuda = not dry_run
    if cuda and not torch.cuda.is_available():
        raise SystemExit("error: torch sees no CUDA device (use --dry-run on a CPU)")
    dev = torch.device("cuda" if cuda else "cpu")
    timer = Timer(torch, cuda)
    m = prep["model"]
    res = {"format": "lasnet-tvm/gpu-check", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "dry_run": dry_run, "repeats": repeats, "prep": {k: prep[k] for k in ("arch", "model", "prediction")},
           "where": {"host": platform.node(), "python": platform.python_version(), "numpy": np.__version__,
                     "torch": torch.__version__,
                     "device": torch.cuda.get_device_name() if cuda else "cpu (dry run)"}}
    x_np = np.random.default_rng(0).standard_normal((1, 3, m["input_size"], m["input_size"])).astype(np.float32)
    with torch.no_grad():
        from lasnet_tvm.models import build_model

        static = build_model(m["arch"], m["granularity"], m["input_size"], m["num_classes"], m["width"],
                             depths=m.get("depths")).static_counterpart().eval().to(dev)
        xt = torch.from_numpy(x_np).to(dev)
        calls = torch_static_calls(torch, static, xt, cuda)
        if cuda:
            models, x_tvm, res["where"]["tvm_device"] = compiled_models(upload, prep, x_np)
            res["activation_rate"] = models["tvm_las"].rate(x_tvm)
            for name, model in models.items():
                calls[name] = (lambda mm: lambda: mm.call(x_tvm))(model)
            res["cuda_graph"] = {"tvm_las": "not captured: each LAS block reads its patch count on the host"}
        else:
            tvm_dir = upload / "python"
            same_python = prep["python"] == f"{sys.version_info[0]}.{sys.version_info[1]}"
            if same_python:
                tvm, _ = load_runtime(upload)
                res["where"]["tvm"] = tvm.__version__
            res["dry_run_checks"] = {"upload_bytes": sum(f.stat().st_size for f in upload.rglob("*") if f.is_file()),
                                     "runtime_imported": same_python, "runtime_dir": tvm_dir.is_dir()}
        log(f"model: timing {', '.join(calls)}")
        res["model_ms"] = timer.medians(calls, repeats)
        res["blocks"] = block_benchmarks(torch, timer, dev, prep, max(3, repeats // 2), dry_run)
    pred = prep["prediction"]
    ms = res["model_ms"]
    if "tvm_las" in ms:
        res["predicted_vs_measured"] = {
            "las": {"rate": res["activation_rate"], "predicted_ms": interpolate(pred["las_ms"], res["activation_rate"]),
                    "measured_ms": ms["tvm_las"]},
            "static": {"predicted_ms": pred["static_ms"], "measured_ms": ms.get("tvm_static")}}
        res["ratios"] = {"las_vs_torch_fp32": ms["tvm_las"] / ms["torch_fp32"],
                         "las_vs_our_static": ms["tvm_las"] / ms["tvm_static"] if "tvm_static" in ms else None}
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "gpu_check.json").write_text(json.dumps(res, indent=2) + "\n")
    return res


def table(res: dict) -> str:
    lines = [f"GPU check ({res['where']['device']}{', DRY RUN' if res['dry_run'] else ''}), median ms:"]
    rate = res.get("activation_rate")
    for k, v in res["model_ms"].items():
        lines.append(f"  LAS-ResNet-50 {k:<18} {v:9.3f}" + (f"   (rate {rate:.2f})" if k == "tvm_las" else ""))
    pvm = res.get("predicted_vs_measured")
    if pvm:
        lines.append(f"  predicted LAS {pvm['las']['predicted_ms']:.3f} vs measured {pvm['las']['measured_ms']:.3f}")
    for b in res["blocks"]:
        lines.append(f"  block {b['arch']} s{b['stage']} ({b['c_in']}ch {b['size']}px): cuDNN fp32 "
                     f"{b['torch_fp32_ms']:.3f}, tf32 {b['torch_tf32_ms']:.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("upload", type=Path)
    p.add_argument("outdir", type=Path)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--dry-run", action="store_true", help="no GPU: everything but the GPU part, on the CPU")
    args = p.parse_args(argv)
    if not (args.upload / "prep.json").is_file():
        print(f"error: {args.upload}: no prep.json (run benchmarks/gpu/run.sh prepare first)", file=sys.stderr)
        return 1
    res = run(args.upload, args.outdir, args.repeats, args.dry_run)
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
