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


def check_input_shape(x: np.ndarray, input_size: int, source: str | Path) -> None:
    """Raise a one-line :class:`LasnetError` unless ``x`` holds ``input_size`` x ``input_size`` images."""
    if x.shape[2:] != (input_size, input_size):
        raise LasnetError(
            f"input is {x.shape[2]}x{x.shape[3]}, but the model {source} takes {input_size}x{input_size} images"
        )
