"""The LASNet training objective (paper Sec. 3.5, Appendix B.2) and its schedules.

``L = CE + alpha * (L_flops + L_bounds) + beta * T^2 * KL(p_teacher || p_student)``

* ``L_flops = (F_dyn / F_stat - t)^2`` with ``F_dyn`` the batch-mean dynamic MACs of the network and
  ``F_stat`` the static network's MACs.
* ``L_bounds``: each block's FLOPs ratio (batch mean of its dynamic MACs over its static MACs) is kept in
  ``[lower, upper]`` by a squared hinge, averaged over blocks. The bounds start at ``[t, t]`` and relax to
  ``[0, 1]`` on a cosine-squared schedule by a third of training (official ``SparsityCriterion_bounds``).
* The distillation term is the usual soft-target KD of the static teacher (``F.kl_div`` of the student's
  log-probabilities against the teacher's probabilities, both at temperature ``T``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def gumbel_temperature(iteration: int, total: int, t0: float = 5.0, t_last: float = 0.1) -> float:
    """Exponentially decaying Gumbel temperature: ``t0`` at iteration 0, ``t_last`` at ``total - 1``."""
    if total <= 1:
        return t0
    p = min(max(iteration / (total - 1), 0.0), 1.0)
    return t0 * (t_last / t0) ** p


def cosine_lr(base_lr: float, iteration: int, total: int, warmup: int = 0) -> float:
    """Cosine learning-rate decay from ``base_lr`` at iteration 0 towards 0 at ``total``; with ``warmup`` > 0
    the rate first rises linearly over that many iterations (``base_lr / warmup`` at iteration 0) and the
    cosine spans the rest."""
    if iteration < warmup:
        return base_lr * (iteration + 1) / warmup
    p = min(max((iteration - warmup) / max(total - warmup, 1), 0.0), 1.0)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * p))


def rate_bounds(epoch: float, epochs: float, target: float) -> tuple[float, float]:
    """``(lower, upper)`` bound on each block's FLOPs ratio at (fractional) ``epoch`` of ``epochs``.

    ``[target, target]`` at epoch 0, relaxed on a ``cos^2`` schedule to ``[0, 1]`` at a third of training.
    """
    p = min(max(epoch / (epochs / 3.0), 0.0), 1.0) if epochs > 0 else 1.0
    progress = math.cos(p * math.pi / 2) ** 2
    return progress * target, 1.0 - progress * (1.0 - target)


def flops_loss(flops: torch.Tensor, static_flops: float, target: float) -> torch.Tensor:
    """``(mean(flops) / static_flops - target)^2`` for per-sample network MACs ``flops`` ``[B]``."""
    return (flops.mean() / static_flops - target) ** 2


def bounds_loss(block_ratio: torch.Tensor, lower: float, upper: float) -> torch.Tensor:
    """Squared hinge keeping each block's ratio ``[n_blocks]`` in ``[lower, upper]``, averaged over blocks."""
    return (F.relu(block_ratio - upper) ** 2 + F.relu(lower - block_ratio) ** 2).mean()


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch."""
    T = temperature
    return F.kl_div(
        F.log_softmax(student_logits / T, dim=1), F.softmax(teacher_logits.detach() / T, dim=1),
        reduction="batchmean",
    ) * (T * T)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the objective: ``alpha`` (FLOPs and bounds), ``beta`` (KD), ``kd_temperature`` (T)."""

    alpha: float = 10.0
    beta: float = 0.5
    kd_temperature: float = 4.0


def lasnet_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    stats: dict,
    block_static_flops: torch.Tensor,
    static_flops: float,
    target: float,
    bounds: tuple[float, float],
    teacher_logits: torch.Tensor | None = None,
    weights: LossWeights = LossWeights(),
) -> tuple[torch.Tensor, dict[str, float]]:
    """The full objective for one batch.

    Parameters
    ----------
    logits, labels :
        Student logits ``[B, C]`` and class labels ``[B]``.
    stats : dict
        The model's ``return_stats`` dict (``flops`` ``[B]``, ``block_flops`` ``[B, n_blocks]``).
    block_static_flops : Tensor
        Static MACs of each block ``[n_blocks]``.
    static_flops : float
        Static MACs of the network.
    target : float
        FLOPs target ``t``.
    bounds : (float, float)
        Current ``(lower, upper)`` from :func:`rate_bounds`.
    teacher_logits : Tensor, optional
        Static teacher's logits; no KD term when None.

    Returns
    -------
    (Tensor, dict)
        The loss and its terms as floats (``ce``, ``flops``, ``bounds``, ``kd``, ``loss``).
    """
    ce = F.cross_entropy(logits, labels)
    l_flops = flops_loss(stats["flops"], static_flops, target)
    block_ratio = stats["block_flops"].mean(dim=0) / block_static_flops
    l_bounds = bounds_loss(block_ratio, *bounds)
    loss = ce + weights.alpha * (l_flops + l_bounds)
    kd = torch.zeros(())
    if teacher_logits is not None and weights.beta:
        kd = kd_loss(logits, teacher_logits, weights.kd_temperature)
        loss = loss + weights.beta * kd
    terms = {k: float(v.detach()) for k, v in
             (("ce", ce), ("flops", l_flops), ("bounds", l_bounds), ("kd", kd), ("loss", loss))}
    return loss, terms
