"""Running models on arrays: the library behind ``lasnet-tvm run``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import LasnetError
from .run_result import RunResult, as_input, check_input_shape

__all__ = ["RunResult", "as_input", "check_input_shape", "load_input", "run_model", "run_pytorch", "save_outputs"]


def load_input(path: str | Path) -> np.ndarray:
    """Load an ``[N, 3, H, W]`` image array from ``.npy`` as float32 (see :func:`as_input` for the dtypes)."""
    path = Path(path)
    if path.is_dir():
        raise LasnetError(f"{path}: is a directory, not a .npy array")
    if not path.is_file():
        raise LasnetError(f"{path}: no such file")
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LasnetError(f"{path}: not a .npy array ({first})") from None
    if not isinstance(x, np.ndarray):
        raise LasnetError(f"{path}: not a .npy array (an .npz archive?)")
    if x.ndim != 4 or x.shape[1] != 3:
        raise LasnetError(f"{path}: input has shape {list(x.shape)}, expected [N, 3, H, W]")
    return as_input(x, path)


def run_model(model_path: str | Path, x: np.ndarray) -> RunResult:
    """Run a ``model.pt`` (PyTorch) or a compiled library (``.so``, made by ``lasnet-tvm compile``) on ``x``."""
    if Path(model_path).suffix in (".so", ".dylib", ".dll", ".tar"):
        from .compiler.artifact import CompiledModel

        return CompiledModel.load(model_path).run(x)
    return run_pytorch(model_path, x)


@torch.no_grad()
def run_pytorch(model_path: str | Path, x: np.ndarray) -> RunResult:
    """Run a ``model.pt`` in eval mode (PyTorch) on ``x``."""
    from .checkpoint import load_checkpoint

    model, _ = load_checkpoint(model_path)
    x = check_input_shape(x, model.spec.input_size, model_path)
    logits, stats = model(torch.from_numpy(x), return_stats=True)
    masks = {b.spec.name: m[:, 0].bool().numpy() for b, m in zip(model.blocks, stats["masks"])}
    return RunResult(logits.numpy().astype(np.float32), stats["rates"].numpy(), masks)


def save_outputs(result: RunResult, output: str | Path, masks_path: str | Path | None = None) -> None:
    """Write logits to ``output`` (.npy) and, if asked, masks and rates to ``masks_path`` (.npz).

    Both files are written in full to temporary files before either replaces its destination, so a failed
    write leaves both destinations as they were.
    """
    import contextlib

    from .fsutil import atomic_path

    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(output, "logits"))
        mtmp = stack.enter_context(atomic_path(masks_path, "masks")) if masks_path is not None else None
        with open(tmp, "wb") as f:
            np.save(f, result.logits)
        if mtmp is not None:
            with open(mtmp, "wb") as f:
                np.savez(f, rates=result.rates, **result.masks)
