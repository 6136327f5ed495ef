"""Measure the candidate schedules of this offline tuning folder (`lasnet-tvm tune --offline`) with TVM's runtime only.

    python measure.py [--repeats 11] [--min-ms 10] [--threads N] [-o results.json]

Needs numpy and the Python version the folder was built for. Each candidate library is first run on the stored
inputs and its outputs compared with the reference outputs computed at build time (every stored patch count);
the correct ones are then timed at the tuning size, all candidates of a task interleaved round by round, and
the median per candidate goes to results.json (beside this script by default). Carry results.json back and
run `lasnet-tvm tune --device NAME --import results.json`.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS_FORMAT = "lasnet-tvm/offline-results"
RTOL = 1e-4  # max error relative to max(1, |reference|), as `lasnet-tvm tune` checks its records


class MeasureError(Exception):
    """A problem with the folder or the machine, printed as one line."""


def load_tvm(manifest):
    """The folder's runtime-only tvm and the device to run on."""
    have = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if manifest["python"] != have:
        raise MeasureError(f"this folder's TVM is built for Python {manifest['python']}, this is Python {have}: "
                           f"run it with python{manifest['python']}, or build it again with --python {have}")
    os.environ["TVM_USE_RUNTIME_LIB"] = "1"  # TVM's runtime-only switch: never look for the compiler
    os.environ.setdefault("TVM_FFI_DISABLE_TORCH_C_DLPACK", "1")
    sys.path.insert(0, str(HERE / "python"))
    import tvm

    if manifest["kind"] == "llvm":
        return tvm, tvm.cpu()
    from tvm_ffi.libinfo import load_lib_ctypes

    try:
        load_lib_ctypes("tvm", "tvm_runtime_cuda", "RTLD_LOCAL", extra_lib_paths=[HERE / "python/tvm/lib"])
    except (OSError, RuntimeError) as e:
        raise MeasureError(f"cannot load TVM's CUDA runtime: {str(e).splitlines()[0][:160]}") from None
    if not tvm.cuda().exist:
        raise MeasureError(f"built for {manifest['kind']}, but no CUDA device is present here")
    return tvm, tvm.cuda()


def check(tvm, dev, func, task):
    """None when ``func`` reproduces the reference at every stored size, else what differs."""
    for c in task["checks"]:
        with np.load(HERE / task["dir"] / c["file"], allow_pickle=False) as f:
            tensors = [tvm.runtime.tensor(f[f"arg{i}"], dev) for i in range(c["args"])]
            func(*tensors)
            for i, t in enumerate(tensors):
                got, want = t.numpy(), f[f"ref{i}"]
                if want.dtype.kind == "f":
                    err = float(np.abs(got.astype(np.float64) - want).max(initial=0.0))
                    if not err <= RTOL * max(1.0, float(np.abs(want).max(initial=0.0))):
                        return f"argument {i} differs by {err:.3g} at P = {c['P']}"
                elif not np.array_equal(got, want):
                    return f"argument {i} differs at P = {c['P']}"
    return None


def timing_args(tvm, dev, task):
    c = task["checks"][0]  # the tuning size
    with np.load(HERE / task["dir"] / c["file"], allow_pickle=False) as f:
        return [tvm.runtime.tensor(f[f"arg{i}"], dev) for i in range(c["args"])]


def measure_task(tvm, dev, task, repeats, min_ms):
    """Per candidate: id, correct, error, median_ms (correct ones only; interleaved rounds)."""
    out, timers = [], []
    for c in task["candidates"]:
        row = {"id": c["id"], "correct": False, "median_ms": None, "error": None}
        out.append(row)
        try:
            mod = tvm.runtime.load_module(str(HERE / task["dir"] / c["file"]))
            row["error"] = check(tvm, dev, mod["main"], task)
        except Exception as e:  # noqa: BLE001 - a candidate that does not load or run is recorded as such
            row["error"] = (str(e).strip().splitlines() or [type(e).__name__])[-1][:200]
        if row["error"] is None:
            row["correct"] = True
            timers.append((row, mod))
    if not timers:
        return out
    args = timing_args(tvm, dev, task)
    samples = {id(r): [] for r, _ in timers}
    evals = []
    for row, mod in timers:  # calls per sample: enough for min_ms
        once = mod.time_evaluator("main", dev, number=1, repeat=3)(*args).median
        number = max(1, int(min_ms / 1e3 / max(once, 1e-7)))
        evals.append((row, mod.time_evaluator("main", dev, number=number, repeat=1)))
    for r in range(repeats):
        k = r % len(evals)
        for row, ev in evals[k:] + evals[:k]:  # the order rotates: no candidate always runs first
            samples[id(row)].append(ev(*args).mean)
    for row, _ in timers:
        row["median_ms"] = 1e3 * statistics.median(samples[id(row)])
    return out


def where(tvm, dev, manifest):
    import tvm_ffi

    device = (platform.processor() or platform.machine()) if manifest["kind"] == "llvm" else \
        f"{dev.device_name} (compute {dev.compute_version})"
    return {"host": platform.node(), "system": platform.platform(), "device": device, "cpu_count": os.cpu_count(),
            "tvm_num_threads": os.environ.get("TVM_NUM_THREADS"), "python": platform.python_version(),
            "numpy": np.__version__, "tvm": tvm.__version__, "tvm_ffi": tvm_ffi.__version__}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", default=str(HERE / "results.json"), help="results file (default: beside this)")
    p.add_argument("--repeats", type=int, default=11, help="timed rounds per task (median over them)")
    p.add_argument("--min-ms", type=float, default=10.0, help="milliseconds of calls per timed sample")
    p.add_argument("--threads", type=int, help="TVM threads")
    args = p.parse_args(argv)
    try:
        if args.repeats < 1 or args.min_ms <= 0:
            raise MeasureError("--repeats must be at least 1 and --min-ms positive")
        try:
            manifest = json.loads((HERE / "offline.json").read_text())
        except (OSError, ValueError) as e:
            raise MeasureError(f"{HERE / 'offline.json'}: unreadable ({e})") from None
        if args.threads:
            os.environ["TVM_NUM_THREADS"] = str(args.threads)
        tvm, dev = load_tvm(manifest)
        n = sum(len(t["candidates"]) for t in manifest["tasks"])
        print(f"{len(manifest['tasks'])} tasks, {n} candidates for {manifest['device']}, {args.repeats} rounds",
              file=sys.stderr)
        tasks = {}
        for i, task in enumerate(manifest["tasks"]):
            rows = measure_task(tvm, dev, task, args.repeats, args.min_ms)
            tasks[task["key"]] = {"name": task["name"], "candidates": rows}
            ok = [r for r in rows if r["correct"]]
            best = min(ok, key=lambda r: r["median_ms"], default=None)
            print(f"[{i + 1}/{len(manifest['tasks'])}] {task['name']}: {len(ok)}/{len(rows)} correct"
                  + ("" if best is None else f", best {best['id']} {best['median_ms']:.4f} ms"), file=sys.stderr)
        res = {"format": RESULTS_FORMAT, "manifest_id": manifest["id"], "device": manifest["device"],
               "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "where": where(tvm, dev, manifest), "repeats": args.repeats, "min_ms": args.min_ms, "tasks": tasks}
        out = Path(args.output)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(res, indent=1) + "\n")
        os.replace(tmp, out)
        print(f"wrote {out}", file=sys.stderr)
        return 0
    except MeasureError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {e.filename}: {e.strerror}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
