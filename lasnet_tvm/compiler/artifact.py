"""Compiled models on disk (a shared library plus a JSON manifest) and in memory (load, run, time)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LasnetError
from ..run_result import RunResult, check_input_shape


def manifest_path(lib: str | Path) -> Path:
    """The manifest beside a compiled library: ``model.so`` -> ``model.json``."""
    return Path(lib).with_suffix(".json")


def save_artifact(executable, path: str | Path, manifest: dict[str, Any]) -> Path:
    """Export ``executable`` to ``path`` (atomically) and write its manifest beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    executable.export_library(str(tmp))
    if manifest.get("target", {}).get("kind") == "nvptx":
        from ..targets import fix_ptx_entries_in_library

        fix_ptx_entries_in_library(tmp)  # TVM 0.27's NVPTX kernels are .func: make them launchable
    tmp.replace(path)
    mtmp = manifest_path(path).with_suffix(".json.tmp")
    mtmp.write_text(json.dumps(manifest, indent=2) + "\n")
    mtmp.replace(manifest_path(path))
    return path


@dataclass
class CompiledModel:
    """A compiled LAS model: ``main(x [1, 3, H, W]) -> (logits [1, classes], counts [n_blocks], masks)``.

    ``masks`` concatenates every block's flattened coarse mask (int32).

    Attributes
    ----------
    vm : tvm.relax.VirtualMachine
    manifest : dict
        Arch, granularity (one S per block), input size, block names and grid sizes, target, versions.
    device : tvm.runtime.Device
    """

    vm: Any
    manifest: dict
    device: Any

    @classmethod
    def from_executable(cls, executable, manifest: dict, device=None) -> "CompiledModel":
        import tvm
        from tvm import relax

        device = device or tvm.cpu()
        nvptx = manifest.get("target", {}).get("kind") == "nvptx"
        if nvptx and device.device_type != tvm.cpu().device_type and isinstance(executable, relax.VMExecutable):
            import tempfile

            with tempfile.TemporaryDirectory() as d:  # the PTX entry fix works on the exported library
                path = save_artifact(executable, Path(d) / "model.so", manifest)
                executable = tvm.runtime.load_module(str(path))
        return cls(relax.VirtualMachine(executable, device), manifest, device)

    @classmethod
    def load(cls, path: str | Path) -> "CompiledModel":
        """Load a library written by ``lasnet-tvm compile`` (and its manifest)."""
        import tvm

        path = Path(path)
        if not path.is_file():
            raise LasnetError(f"{path}: no such file")
        mpath = manifest_path(path)
        if not mpath.is_file():
            raise LasnetError(f"{path}: no manifest {mpath.name} beside it (was it made by `lasnet-tvm compile`?)")
        try:
            manifest = json.loads(mpath.read_text())
        except json.JSONDecodeError as e:
            raise LasnetError(f"{mpath}: corrupt manifest ({e.msg} at line {e.lineno})") from None
        from .pipeline import ABI

        if manifest.get("format") != "lasnet-tvm/compiled" or manifest.get("abi") != ABI:
            raise LasnetError(
                f"{path}: compiled by another lasnet-tvm version (abi {manifest.get('abi')}, this one reads {ABI}); "
                "compile the model again"
            )
        try:
            lib = tvm.runtime.load_module(str(path))
        except Exception as e:  # noqa: BLE001 - TVM raises several types for a bad library
            raise LasnetError(f"{path}: cannot load compiled module ({str(e).splitlines()[0][:160]})") from None
        kind = manifest.get("target", {}).get("kind", "llvm")
        device = tvm.cpu() if kind == "llvm" else tvm.cuda()
        if kind != "llvm" and not device.exist:
            raise LasnetError(f"{path}: compiled for {kind}, but no such device is present here")
        return cls.from_executable(lib, manifest, device)

    @property
    def input_size(self) -> int:
        return int(self.manifest["input_size"])

    def _call(self, x: np.ndarray):
        import tvm

        out = self.vm["main"](tvm.runtime.tensor(x, self.device))
        return out[0].numpy(), out[1].numpy(), out[2].numpy()

    def run(self, x: np.ndarray) -> RunResult:
        """Run on ``x`` ``[N, 3, H, W]`` (float32), one image at a time."""
        check_input_shape(x, self.input_size, self.manifest.get("source", "compiled model"))
        grids = self.manifest["grids"]
        logits, counts, flat = [], [], []
        for n in range(x.shape[0]):
            lg, ct, mk = self._call(np.ascontiguousarray(x[n : n + 1], dtype=np.float32))
            logits.append(lg[0])
            counts.append(ct)
            flat.append(mk)
        flat = np.stack(flat).astype(bool)
        bounds = np.cumsum([0] + [g * g for g in grids])
        masks = {
            name: flat[:, bounds[i] : bounds[i + 1]].reshape(-1, g, g)
            for i, (name, g) in enumerate(zip(self.manifest["blocks"], grids))
        }
        rates = np.stack(counts) / np.array([g * g for g in grids], dtype=np.float64)  # share of active patches
        return RunResult(np.stack(logits).astype(np.float32), rates, masks)

    def time(self, x: np.ndarray, repeats: int = 20, warmup: int = 3) -> list[float]:
        """Wall-clock seconds of ``repeats`` calls on one image (after ``warmup`` calls)."""
        import tvm

        inp = tvm.runtime.tensor(np.ascontiguousarray(x[:1], dtype=np.float32), self.device)
        f = self.vm["main"]
        for _ in range(warmup):
            f(inp)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = f(inp)
            out[1].numpy()  # synchronizes
            times.append(time.perf_counter() - t0)
        return times


class CallProfiler:
    """Accumulates the wall time of every call a compiled model's VM makes while attached (a context manager).

    Several profilers may be attached to different models and their runs interleaved.
    """

    def __init__(self, model: CompiledModel):
        self.model = model
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._t0 = 0.0

    def _hook(self, func, symbol, before_run, ret_value, *args):
        if before_run:
            self._t0 = time.perf_counter()
        else:
            symbol = str(symbol)
            self.seconds[symbol] = self.seconds.get(symbol, 0.0) + time.perf_counter() - self._t0
            self.calls[symbol] = self.calls.get(symbol, 0) + 1
        return 0  # VMInstrumentReturnKind.NO_OP

    def __enter__(self) -> CallProfiler:
        self.model.vm.set_instrument(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self.model.vm.set_instrument(None)

    def summary(self, images: int) -> dict[str, dict]:
        """``{symbol: {"ms", "calls"}}`` per image over ``images`` profiled images, slowest first."""
        rows = {s: {"ms": t * 1e3 / images, "calls": self.calls[s] / images} for s, t in self.seconds.items()}
        return dict(sorted(rows.items(), key=lambda kv: -kv[1]["ms"]))
