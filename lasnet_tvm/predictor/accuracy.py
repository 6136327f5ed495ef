"""Accuracy of latency predictions against measurements: the figures the benchmarks and calibration report."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.stats import spearmanr

from ..errors import LasnetError


def accuracy(measured_ms: Sequence[float], predicted_ms: Sequence[float], within: float = 0.10) -> dict:
    """Compare predicted with measured latencies.

    Parameters
    ----------
    measured_ms, predicted_ms : sequence of float
        Paired latencies (same length, measured > 0).
    within : float
        Relative error band for ``share_within``.

    Returns
    -------
    dict
        ``n``; ``mape`` (mean of ``|pred - meas| / meas``, a fraction); ``share_within`` (fraction of points
        with relative error at most ``within``); ``within``; ``spearman`` (rank correlation, ``None`` for fewer
        than 3 points or constant inputs); ``mean_ratio`` (geometric mean of ``pred / meas``: > 1 means
        pessimistic).
    """
    m = np.asarray(measured_ms, dtype=float)
    p = np.asarray(predicted_ms, dtype=float)
    if m.shape != p.shape or m.ndim != 1:
        raise LasnetError(f"accuracy: {m.shape} measured vs {p.shape} predicted values")
    if m.size == 0 or np.any(m <= 0) or np.any(p <= 0):
        raise LasnetError("accuracy: needs at least one pair and positive latencies")
    rel = np.abs(p - m) / m
    rho = None
    if m.size >= 3 and np.ptp(m) > 0 and np.ptp(p) > 0:
        rho = float(spearmanr(m, p).statistic)
    return {
        "n": int(m.size),
        "mape": float(rel.mean()),
        "share_within": float(np.mean(rel <= within)),
        "within": within,
        "spearman": rho,
        "mean_ratio": float(np.exp(np.mean(np.log(p / m)))),
    }
