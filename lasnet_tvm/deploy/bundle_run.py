"""Run the compiled LAS model of this folder with TVM's runtime only (a bundle made by `lasnet-tvm bundle`).

    python run.py --input x.npy -o logits.npy [--masks masks.npz]   # x: float32 [N, 3, H, W]
    python run.py --bench [--repeats 30] [--threads N] [--input x.npy] [--json timings.json]

Needs numpy and the Python version the bundle was made for. With torch installed and the PyTorch models in
the bundle (`lasnet-tvm bundle --torch`), --bench also times the PyTorch static model and checks the logits.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TOLERANCE = 1e-4  # max relative logit error against PyTorch, as `lasnet-tvm verify`


class BundleError(Exception):
    """A problem with the input or the machine, printed as one line."""


def load_input(path, size):
    try:
        x = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise BundleError(f"{path}: no such file") from None
    except (ValueError, OSError, EOFError) as e:
        raise BundleError(f"{path}: not a .npy array ({str(e).splitlines()[0][:120]})") from None
    if x.ndim != 4 or x.shape[1] != 3:
        raise BundleError(f"{path}: input has shape {list(x.shape)}, expected [N, 3, H, W]")
    if x.shape[2:] != (size, size):
        raise BundleError(f"{path}: input is {x.shape[2]}x{x.shape[3]}, but the model takes {size}x{size} images")
    return np.ascontiguousarray(x, dtype=np.float32)


class Model:
    """The compiled model on the bundle's runtime-only TVM: ``main(x [1,3,H,W]) -> (logits, counts, masks)``."""

    def __init__(self, manifest, bundle):
        have = f"{sys.version_info[0]}.{sys.version_info[1]}"
        if bundle["python"] != have:
            raise BundleError(f"this bundle's TVM is built for Python {bundle['python']}, this is Python {have}: "
                              f"run it with python{bundle['python']}, or bundle again with --python {have}")
        os.environ["TVM_USE_RUNTIME_LIB"] = "1"  # TVM's runtime-only switch: never look for the compiler
        os.environ.setdefault("TVM_FFI_DISABLE_TORCH_C_DLPACK", "1")  # no JIT build of a torch addon (no headers here)
        sys.path.insert(0, str(HERE / "python"))
        import tvm
        from tvm.runtime.vm import VirtualMachine

        self.tvm, self.manifest = tvm, manifest
        if manifest["target"]["kind"] == "llvm":
            self.device = tvm.cpu()
        else:
            from tvm_ffi.libinfo import load_lib_ctypes

            try:  # the CUDA device API (the compiler's `import tvm` loads it as a backend)
                load_lib_ctypes("tvm", "tvm_runtime_cuda", "RTLD_LOCAL", extra_lib_paths=[HERE / "python/tvm/lib"])
            except (OSError, RuntimeError) as e:
                raise BundleError("cannot load TVM's CUDA runtime (it needs an NVIDIA driver and the CUDA runtime "
                                  f"library): {str(e).splitlines()[0][:160]}") from None
            self.device = tvm.cuda()
            if not self.device.exist:
                raise BundleError(f"compiled for {manifest['target']['kind']}, but no CUDA device is present here")
        self.main = VirtualMachine(tvm.runtime.load_module(str(HERE / "model.so")), self.device)["main"]
        self.weights = "in the library"
        self.params = [tvm.runtime.tensor(w, self.device) for w in self._params(manifest, bundle)]

    def _params(self, manifest, bundle):
        """The weights passed after x, when the library does not hold them: from model.params.npz, or random."""
        names = manifest.get("params", [])
        if names and "random_weights" in bundle:
            rw = bundle["random_weights"]
            self.weights = f"random (seed {rw['seed']}), the compiled model's shapes and statistics"
            rng = np.random.default_rng(rw["seed"])
            return [rng.normal(rw["params"][k]["mean"], rw["params"][k]["std"], rw["params"][k]["shape"])
                    .astype(rw["params"][k]["dtype"]) for k in names]
        if names:
            self.weights = "model.params.npz"
            with np.load(HERE / "model.params.npz", allow_pickle=False) as f:
                return [f[k] for k in names]
        return []

    def call(self, x):
        out = self.main(self.tvm.runtime.tensor(x, self.device), *self.params)
        return out[0].numpy(), out[1].numpy(), out[2].numpy()

    def run(self, x):
        """Logits [N, classes], activation rates [N, blocks] and each block's coarse masks, one image at a time."""
        grids = self.manifest["grids"]
        outs = [self.call(x[n : n + 1]) for n in range(x.shape[0])]
        logits = np.stack([o[0][0] for o in outs]).astype(np.float32)
        flat = np.stack([o[2] for o in outs]).astype(bool)
        bounds = np.cumsum([0] + [g * g for g in grids])
        masks = {name: flat[:, bounds[i] : bounds[i + 1]].reshape(-1, g, g)
                 for i, (name, g) in enumerate(zip(self.manifest["blocks"], grids))}
        rates = np.stack([o[1] for o in outs]) / np.array([g * g for g in grids], dtype=np.float64)
        return logits, rates, masks

    def where(self):
        import tvm_ffi

        d = self.device
        device = (platform.processor() or platform.machine()) if self.manifest["target"]["kind"] == "llvm" else \
            f"{d.device_name} (compute {d.compute_version})"
        return {"host": platform.node(), "system": platform.platform(), "machine": platform.machine(),
                "device": device, "cpu_count": os.cpu_count(), "tvm_num_threads": os.environ.get("TVM_NUM_THREADS"),
                "python": platform.python_version(), "numpy": np.__version__, "tvm": self.tvm.__version__,
                "tvm_ffi": tvm_ffi.__version__}


def save(array_or_dict, path):
    """Write a .npy (array) or .npz (dict) atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        if isinstance(array_or_dict, dict):
            np.savez(f, **array_or_dict)
        else:
            np.save(f, array_or_dict)
    os.replace(tmp, path)


def torch_models(threads):
    """The bundle's PyTorch models (LAS, static) and torch, or why they are not used."""
    if not (HERE / "pytorch").is_dir():
        return None, "not in this bundle (bundle with --torch to carry the PyTorch models)"
    try:
        import torch
    except ImportError:
        return None, "torch is not installed here"
    if threads:
        torch.set_num_threads(threads)
    return (torch, torch.export.load(HERE / "pytorch/las.pt2").module(),
            torch.export.load(HERE / "pytorch/static.pt2").module()), None


def bench(model, x, repeats, warmup, threads=None):
    """Median wall-clock ms per image of the compiled model (and the PyTorch models), interleaved repeats."""
    inp = model.tvm.runtime.tensor(x, model.device)

    def compiled():
        model.main(inp, *model.params)[1].numpy()  # .numpy() synchronizes

    calls = {"tvm_las": compiled}
    res = {"model": {k: model.manifest.get(k) for k in ("arch", "granularity", "input_size", "num_classes",
                                                          "fusion", "static", "target", "source", "lasnet_tvm",
                                                          "tuned")},
           "where": model.where(), "weights": model.weights}
    counts = model.call(x)[1]
    res["activation_rate"] = float(np.mean(counts / np.array([g * g for g in model.manifest["grids"]])))
    torch_parts, why = torch_models(threads)
    if torch_parts is not None:
        torch, las, static = torch_parts
        xt = torch.from_numpy(x)
        with torch.no_grad():
            ref = las(xt).numpy()
        got = model.call(x)[0]
        err = float(np.abs(got - ref).max() / max(1.0, float(np.abs(ref).max())))
        res["check"] = {"against": "PyTorch LAS model", "max_rel_err": err, "tolerance": TOLERANCE,
                        "ok": err <= TOLERANCE}
        res["where"].update(torch=torch.__version__, torch_threads=torch.get_num_threads())
        calls["torch_static"] = lambda: static(xt)
        calls["torch_las_dense"] = lambda: las(xt)
    else:
        res["torch"] = why
    times = {k: [] for k in calls}
    with _no_grad(torch_parts):
        for fn in calls.values():
            for _ in range(warmup):
                fn()
        for _ in range(repeats):
            for k, fn in calls.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    res["median_ms"] = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    res["repeats"] = repeats
    if "torch_static" in times:
        res["speedup_vs_torch_static"] = res["median_ms"]["torch_static"] / res["median_ms"]["tvm_las"]
    return res


def _no_grad(torch_parts):
    import contextlib

    return torch_parts[0].no_grad() if torch_parts is not None else contextlib.nullcontext()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", help="float32 .npy [N, 3, H, W] (--bench: the first image; default random)")
    p.add_argument("-o", "--output", help="logits .npy to write (with --input)")
    p.add_argument("--masks", help="also write each block's coarse mask and the activation rates to this .npz")
    p.add_argument("--bench", action="store_true", help="time the model; print what ran, where, timings (JSON)")
    p.add_argument("--json", help="--bench: also write the JSON to this file")
    p.add_argument("--repeats", type=int, default=30, help="timed calls per model (--bench)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first (--bench)")
    p.add_argument("--threads", type=int, help="TVM (and torch) threads")
    args = p.parse_args(argv)
    if not args.bench and not (args.input and args.output):
        p.error("give --input X.npy -o Y.npy, or --bench")
    try:
        manifest = json.loads((HERE / "model.json").read_text())
        bundle = json.loads((HERE / "bundle.json").read_text())
        x = load_input(args.input, manifest["input_size"]) if args.input else None
        if args.threads:
            os.environ["TVM_NUM_THREADS"] = str(args.threads)
        model = Model(manifest, bundle)
        if args.bench:
            if x is None:
                s = manifest["input_size"]
                x = np.random.default_rng(0).standard_normal((1, 3, s, s)).astype(np.float32)
            res = bench(model, np.ascontiguousarray(x[:1]), args.repeats, args.warmup, args.threads)
            print(json.dumps(res, indent=2))
            if args.json:
                Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
            return 0
        if "random_weights" in bundle:
            raise BundleError("this bundle carries no weights (bundled with --no-weights): it serves --bench only")
        logits, rates, masks = model.run(x)
        save(logits, args.output)
        if args.masks:
            save({"rates": rates, **masks}, args.masks)
        print(f"wrote {args.output}: logits {tuple(logits.shape)}, mean activation rate {rates.mean():.3f}")
        return 0
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # an output that cannot be written
        print(f"error: {e.filename}: {e.strerror}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
