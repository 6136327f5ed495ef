"""What a model run returns, and the input check every runner makes (shared by :mod:`lasnet_tvm.runner` and the
compiled modules of :mod:`lasnet_tvm.compiler.artifact`, below both)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import LasnetError


@dataclass
class RunResult:
    """Logits ``[N, classes]``, per-block activation rates ``[N, blocks]`` and coarse masks by block name."""

    logits: np.ndarray
    rates: np.ndarray
    masks: dict[str, np.ndarray]


def as_input(x: np.ndarray, source: str | Path = "input") -> np.ndarray:
    """``x`` as a contiguous float32 array: float16/float32/float64 images are accepted (float64 is rounded to
    float32, as PyTorch and the compiled library compute in float32); integer, boolean and complex arrays are
    refused (images must be normalized floats), and so are NaN and infinite values, before and after rounding.
    """
    if x.dtype.kind != "f":
        raise LasnetError(f"{source}: input dtype is {x.dtype}; expected float32 images (normalized, not raw "
                          "pixels): convert with x.astype(np.float32)")
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        n = int(np.argwhere(bad)[0][0])
        nan, inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
        what = f"{nan} NaN" if nan else f"{inf} infinite" if inf else f"{int(bad.sum())} too large for float32"
        raise LasnetError(f"{source}: input holds {what} value(s) (first in image {n}); every value must be finite")
    return out


def check_input_shape(x: np.ndarray, input_size: int, source: str | Path) -> np.ndarray:
    """Check ``x`` before a model runs on it (PyTorch and compiled alike): ``[N >= 1, 3, H, W]`` at the model's
    input size, a float dtype, finite values (see :func:`as_input`); returns it as contiguous float32."""
    if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[1] != 3:
        raise LasnetError(f"input has shape {list(np.shape(x))}, expected [N, 3, H, W]")
    if x.shape[0] == 0:
        raise LasnetError("input holds no images (batch of 0)")
    if x.shape[2:] != (input_size, input_size):
        raise LasnetError(
            f"input is {x.shape[2]}x{x.shape[3]}, but the model {source} takes {input_size}x{input_size} images"
        )
    return as_input(x)
