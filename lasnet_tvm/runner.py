"""Running models on arrays: the library behind ``lasnet-tvm run``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import LasnetError
from .run_result import RunResult, check_input_shape

__all__ = ["RunResult", "check_input_shape", "load_input", "run_model", "run_pytorch", "save_outputs"]


def load_input(path: str | Path) -> np.ndarray:
    """Load a float32 ``[N, 3, H, W]`` array from ``.npy``."""
    path = Path(path)
    if not path.is_file():
        raise LasnetError(f"{path}: no such file")
    try:
        x = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise LasnetError(f"{path}: not a .npy array ({e})") from None
    if x.ndim != 4 or x.shape[1] != 3:
        raise LasnetError(f"{path}: input has shape {list(x.shape)}, expected [N, 3, H, W]")
    return np.ascontiguousarray(x, dtype=np.float32)


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
    check_input_shape(x, model.spec.input_size, model_path)
    logits, stats = model(torch.from_numpy(x), return_stats=True)
    masks = {b.spec.name: m[:, 0].bool().numpy() for b, m in zip(model.blocks, stats["masks"])}
    return RunResult(logits.numpy().astype(np.float32), stats["rates"].numpy(), masks)


def save_outputs(result: RunResult, output: str | Path, masks_path: str | Path | None = None) -> None:
    """Write logits to ``output`` (.npy) and, if asked, masks and rates to ``masks_path`` (.npz)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    np.save(output, result.logits)
    if masks_path is not None:
        np.savez(masks_path, rates=result.rates, **result.masks)
