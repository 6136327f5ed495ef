"""Compiled models on disk (a shared library plus a JSON manifest) and in memory (load, run, time)."""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LasnetError
from ..run_result import RunResult, check_input_shape


def manifest_path(lib: str | Path) -> Path:
    """The manifest beside a compiled library: ``model.so`` -> ``model.json``."""
    return Path(lib).with_suffix(".json")


def params_path(lib: str | Path) -> Path:
    """The weights beside a library compiled with separate params: ``model.so`` -> ``model.params.npz``."""
    return Path(lib).with_suffix(".params.npz")


def file_digest(path: str | Path) -> dict[str, Any]:
    """Size in bytes and sha256 of a file (what the manifest records of its library)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"bytes": Path(path).stat().st_size, "sha256": h.hexdigest()}


def save_artifact(executable, path: str | Path, manifest: dict[str, Any], params: dict | None = None) -> Path:
    """Export ``executable`` to ``path`` and write its manifest (and ``params``, the weights kept outside the
    library, as ``.npz``) beside it, all atomically.

    The manifest records the library's size and sha256 (``library``), which :meth:`CompiledModel.load` checks
    before loading it. The manifest is replaced last, so an interrupted save leaves the old pair untouched or
    a new library beside the old manifest, which the checksum then refuses.
    """
    from ..fsutil import atomic_path

    path = Path(path)
    if params is not None:
        with atomic_path(params_path(path), "weights") as ptmp, open(ptmp, "wb") as f:
            np.savez(f, **params)
    with atomic_path(manifest_path(path), "manifest") as mtmp, atomic_path(path, "compiled library") as tmp:
        target = manifest.get("target", {})
        if target.get("kind") == "cuda":  # kernels as a fatbin (cubin + PTX), not CUDA C compiled at load time
            from ..cuda_binary import binary_pack_imports, device_code_record

            binaries = []
            executable.export_library(str(tmp), fpack_imports=binary_pack_imports(str(target["arch"]), binaries))
            manifest["device_code"] = device_code_record(binaries)
        else:
            executable.export_library(str(tmp))
        if target.get("kind") == "nvptx":
            from ..targets import fix_ptx_entries_in_library

            fix_ptx_entries_in_library(tmp)  # TVM 0.27's NVPTX kernels are .func: make them launchable
        manifest["library"] = {"file": path.name, **file_digest(tmp)}
        mtmp.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def load_params(lib: str | Path, manifest: dict) -> dict | None:
    """The weights of a library compiled with separate params (None for one that holds them)."""
    if "params" not in manifest:
        return None
    path = params_path(lib)
    try:
        with np.load(path, allow_pickle=False) as f:
            params = {name: f[name] for name in manifest["params"]}
    except FileNotFoundError:
        raise LasnetError(f"{lib}: its weights {path.name} are not beside it") from None
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as e:
        raise LasnetError(f"{path}: not the weights of {Path(lib).name} ({str(e).splitlines()[0][:120]})") from None
    return params


_MANIFEST_KEYS = {"input_size": int, "blocks": list, "grids": list, "target": dict, "library": dict}


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of the library ``path``, checked against it before anything loads it.

    Refuses (a one-line LasnetError) a missing or corrupt manifest, one of another lasnet-tvm ABI or TVM
    version, and a library whose size or sha256 differs from what the manifest recorded (truncated,
    overwritten, or the manifest of another model): loading such a file can crash the process.
    """
    import tvm

    from .pipeline import ABI

    path = Path(path)
    if path.is_dir():
        raise LasnetError(f"{path}: is a directory, not a compiled library")
    if not path.is_file():
        raise LasnetError(f"{path}: no such file")
    mpath = manifest_path(path)
    if not mpath.is_file():
        raise LasnetError(f"{path}: no manifest {mpath.name} beside it (was it made by `lasnet-tvm compile`?)")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise LasnetError(f"{mpath}: corrupt manifest ({e.msg} at line {e.lineno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LasnetError(f"{mpath}: cannot read manifest ({getattr(e, 'strerror', None) or e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "lasnet-tvm/compiled":
        raise LasnetError(f"{mpath}: not a lasnet-tvm manifest (no 'lasnet-tvm/compiled' format tag)")
    if manifest.get("abi") != ABI:
        raise LasnetError(
            f"{path}: compiled by another lasnet-tvm version (abi {manifest.get('abi')}, this one reads {ABI}); "
            "compile the model again"
        )
    if manifest.get("tvm") != tvm.__version__:
        raise LasnetError(f"{path}: compiled with TVM {manifest.get('tvm')}, this is TVM {tvm.__version__}; "
                          "compile the model again")
    if "library" not in manifest:
        raise LasnetError(f"{path}: its manifest records no checksum (written by an older lasnet-tvm); "
                          "compile the model again")
    for key, typ in _MANIFEST_KEYS.items():
        if not isinstance(manifest.get(key), typ):
            raise LasnetError(f"{mpath}: corrupt manifest (field {key!r} missing or not a {typ.__name__})")
    if len(manifest["blocks"]) != len(manifest["grids"]):
        raise LasnetError(f"{mpath}: corrupt manifest ({len(manifest['blocks'])} blocks, "
                          f"{len(manifest['grids'])} grids)")
    want = manifest["library"]
    have = file_digest(path)
    if have["bytes"] != want.get("bytes"):
        raise LasnetError(f"{path}: {have['bytes']} bytes, but its manifest records {want.get('bytes')} "
                          "(truncated, or not the library this manifest describes); compile the model again")
    if have["sha256"] != want.get("sha256"):
        raise LasnetError(f"{path}: checksum differs from its manifest's (modified, or not the library this "
                          "manifest describes); compile the model again")
    return manifest


#: LLVM CPU features that are instruction sets (a library using one crashes a CPU without it); the others
#: LLVM lists are tuning hints.
_ISA_PREFIXES = ("sse", "ssse", "avx", "amx", "fma", "f16c", "bmi", "popcnt", "lzcnt", "movbe", "aes", "sha",
                 "vaes", "vpclmulqdq", "gfni", "pclmul", "adx", "neon", "sve", "dotprod", "fullfp16", "fp16", "i8mm",
                 "bf16", "crypto", "crc", "lse", "rcpc")


def missing_cpu_features(target: dict) -> tuple[str, str, list[str]]:
    """``(target CPU, host CPU, ISA features the target CPU has and this CPU lacks)`` of an llvm ``target``
    (as the manifest records it); empty when the library can run here."""
    import tvm
    from tvm.target import codegen

    host = str(codegen.llvm_get_system_cpu())
    mcpu = target.get("mcpu")
    if not mcpu or mcpu == host:
        return mcpu or "generic", host, []
    lib = set(map(str, codegen.llvm_get_cpu_features(tvm.target.Target({"kind": "llvm", "mcpu": mcpu}))))
    here = set(map(str, codegen.llvm_get_cpu_features(tvm.target.Target({"kind": "llvm", "mcpu": host}))))
    return mcpu, host, sorted(f for f in lib - here if f.startswith(_ISA_PREFIXES))


def check_runs_here(path: str | Path, target: dict) -> None:
    """Refuse (a LasnetError) a library built for another machine: a CUDA one where no CUDA device is, an llvm one
    for another architecture (``mtriple``) or for a CPU whose instruction sets this one lacks (``mcpu``)."""
    import tvm
    from tvm.target import codegen

    kind = target.get("kind", "llvm")
    if kind != "llvm":
        if not tvm.cuda().exist:
            raise LasnetError(f"{path}: compiled for {kind} ({target.get('arch', target.get('mcpu', '?'))}), "
                              "but this machine has no CUDA device; run it where one is")
        return
    host_arch = str(codegen.llvm_get_system_triple()).split("-")[0]
    lib_arch = str(target.get("mtriple", host_arch)).split("-")[0]
    if lib_arch != host_arch:
        raise LasnetError(f"{path}: compiled for {lib_arch} (mtriple {target['mtriple']}), this machine is "
                          f"{host_arch}; compile it for this machine or run it on that one")
    mcpu, host, missing = missing_cpu_features(target)
    if missing:
        raise LasnetError(f"{path}: compiled for CPU {mcpu}, whose {', '.join(missing[:4])} this CPU ({host}) "
                          "lacks; compile it on this machine (or with --target \"llvm -mcpu=...\")")


def check_compiled_from(library: str | Path, model_path: str | Path) -> None:
    """Refuse (a LasnetError) comparing ``library`` with a ``model.pt`` it was not compiled from: another arch,
    granularity, input size, class count or width (what its manifest recorded)."""
    from ..checkpoint import read_checkpoint

    manifest, ckpt = read_manifest(library), read_checkpoint(model_path)
    for key in ("arch", "granularity", "input_size", "num_classes", "width_mult"):
        have, want = manifest.get(key), ckpt.get(key)
        if key == "granularity":
            have, want = list(have or []), list(want or [])
        if have != want:
            raise LasnetError(f"{library} was compiled from another model than {model_path} "
                              f"({key} {have} vs {want})")


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
    params: list = field(default_factory=list)  # weights passed after x (libraries compiled with separate params)

    @classmethod
    def from_executable(cls, executable, manifest: dict, device=None, params: dict | None = None) -> "CompiledModel":
        import tvm
        from tvm import relax

        device = device or tvm.cpu()
        gpu = manifest.get("target", {}).get("kind") in ("cuda", "nvptx")
        if gpu and device.dlpack_device_type() != tvm.cpu().dlpack_device_type() and isinstance(executable, relax.VMExecutable):
            import tempfile

            with tempfile.TemporaryDirectory() as d:  # the device code is compiled (fatbin, PTX fix) on export
                path = save_artifact(executable, Path(d) / "model.so", manifest)
                executable = tvm.runtime.load_module(str(path))
        weights = [tvm.runtime.tensor(params[name], device) for name in manifest.get("params", [])]
        return cls(relax.VirtualMachine(executable, device), manifest, device, weights)

    @classmethod
    def load(cls, path: str | Path) -> "CompiledModel":
        """Load a library written by ``lasnet-tvm compile``, after checking it against its manifest."""
        import tvm

        path = Path(path)
        manifest = read_manifest(path)
        check_runs_here(path, manifest["target"])
        device = tvm.cpu() if manifest["target"].get("kind", "llvm") == "llvm" else tvm.cuda()
        try:
            lib = tvm.runtime.load_module(str(path))
        except Exception as e:  # noqa: BLE001 - TVM raises several types for a bad library
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LasnetError(f"{path}: cannot load compiled module ({first})") from None
        return cls.from_executable(lib, manifest, device, load_params(path, manifest))

    @property
    def input_size(self) -> int:
        return int(self.manifest["input_size"])

    def _call(self, x: np.ndarray):
        import tvm

        out = self.vm["main"](tvm.runtime.tensor(x, self.device), *self.params)
        return out[0].numpy(), out[1].numpy(), out[2].numpy()

    def run(self, x: np.ndarray) -> RunResult:
        """Run on ``x`` ``[N, 3, H, W]`` (float32; checked as :func:`lasnet_tvm.runner.check_input_shape` does
        for PyTorch models), one image at a time."""
        x = check_input_shape(x, self.input_size, self.manifest.get("source", "compiled model"))
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
            f(inp, *self.params)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = f(inp, *self.params)
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
