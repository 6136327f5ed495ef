"""Self-contained bundles: a compiled model plus a runtime-only TVM and ``run.py``, to run where only numpy is.

Layout of a bundle folder::

    run.py                the runner (numpy + the bundled TVM runtime; see its docstring)
    model.so, model.json  the compiled library and its manifest, as ``lasnet-tvm compile`` writes them
    model.params.npz      the weights, when kept outside the library (absent with ``no_weights``: bundle.json
                          then holds each weight's shape and statistics and a seed to draw random ones)
    bundle.json           what the bundle holds: Python version, TVM versions, files
    python/               tvm (runtime only), tvm_ffi (for the bundle's Python), typing_extensions.py
    pytorch/              (with ``torch_models``) the PyTorch LAS and static models as torch.export programs
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import LasnetError
from .runtime import TVM_COMPILER_LIB, copy_runtime, parse_python

BUNDLE_FORMAT = "lasnet-tvm/bundle"
RUNNER = Path(__file__).with_name("bundle_run.py")


@dataclass
class Bundle:
    path: Path
    manifest: dict  # the compiled model's
    info: dict  # bundle.json

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())


def _check_output(output: Path) -> None:
    """``output`` may be new, an empty folder or an earlier bundle (replaced at the end), nothing else."""
    if not output.exists():
        return
    if not output.is_dir():
        raise LasnetError(f"{output}: exists and is not a folder")
    if any(output.iterdir()) and not (output / "bundle.json").is_file():
        raise LasnetError(f"{output}: a folder that is not a bundle (no bundle.json); choose a new or empty folder")


def _export_torch(model_path: Path, dest: Path) -> None:
    """The PyTorch LAS model (dense masks) and its static counterpart as torch.export programs."""
    import numpy as np
    import torch

    from ..checkpoint import load_checkpoint

    model, _ = load_checkpoint(model_path)
    s = model.spec.input_size
    x = (torch.from_numpy(np.zeros((1, 3, s, s), np.float32)),)
    dest.mkdir()
    for name, net in (("las", model), ("static", model.static_counterpart().eval())):
        torch.export.save(torch.export.export(net, x), dest / f"{name}.pt2")


def _random_weights(params_file: Path, seed: int) -> dict:
    """What the target needs to draw stand-in weights: each weight's shape, dtype, mean and std, and a seed."""
    import numpy as np

    with np.load(params_file) as f:
        stats = {k: {"shape": list(f[k].shape), "dtype": str(f[k].dtype), "mean": float(f[k].mean()),
                     "std": float(f[k].std())} for k in f.files}
    params_file.unlink()
    return {"seed": seed, "params": stats}


def build_bundle(model_path, output, target="llvm", fusion: str = "all", static: bool = False, database=None,
                 python: str | None = None, torch_models: bool = False, params: str = "auto",
                 no_weights: bool = False, seed: int = 0) -> Bundle:
    """Compile ``model_path`` for ``target`` and write a self-contained bundle folder ``output``.

    ``params`` places the weights (see :func:`lasnet_tvm.compiler.compile_model`); ``no_weights`` leaves them out
    (the target draws random ones of the same shapes and statistics from ``seed``: enough for timing).

    ``python`` (``"X.Y"``, default this one) is the target's Python: its tvm_ffi is fetched as a wheel when it is
    not this one. The bundle is built in a temporary folder beside ``output`` and renamed into place at the end,
    so a failure leaves ``output`` as it was.
    """
    from ..compiler import compile_checkpoint

    model_path, output = Path(model_path), Path(output)
    python = parse_python(python)
    if no_weights and torch_models:
        raise LasnetError("the PyTorch models carry the weights: bundle with --torch or --no-weights, not both")
    if not model_path.is_file():
        raise LasnetError(f"{model_path}: no such file")
    _check_output(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    tmp.chmod(0o755)  # mkdtemp's folder is private; a bundle is a folder like any other
    try:
        versions = copy_runtime(tmp / "python", python)
        result = compile_checkpoint(model_path, target, fusion, static, tmp / "model.so", database=database,
                                    params="separate" if no_weights else params)
        random_weights = _random_weights(tmp / "model.params.npz", seed) if no_weights else None
        if torch_models:
            _export_torch(model_path, tmp / "pytorch")
        shutil.copy2(RUNNER, tmp / "run.py")
        leaked = [str(p.relative_to(tmp)) for p in tmp.rglob(TVM_COMPILER_LIB)]
        if leaked:
            raise LasnetError(f"internal: the bundle would carry TVM's compiler ({leaked[0]})")
        info = {"format": BUNDLE_FORMAT, "python": python, **versions,
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "source": str(model_path),
                "target_kind": result.manifest["target"]["kind"], "torch_models": torch_models,
                "files": sorted(str(p.relative_to(tmp)) for p in tmp.iterdir())}
        if random_weights is not None:
            info["random_weights"] = random_weights
        (tmp / "bundle.json").write_text(json.dumps(info, indent=2) + "\n")
        _replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Bundle(output, result.manifest, info)


def _replace(tmp: Path, output: Path) -> None:
    """Move the finished bundle ``tmp`` to ``output``; an earlier bundle there is removed only after that."""
    if not output.exists():
        tmp.rename(output)
        return
    old = tmp.with_suffix(".old")
    output.rename(old)
    try:
        tmp.rename(output)
    except OSError:
        old.rename(output)
        raise
    shutil.rmtree(old, ignore_errors=True)
