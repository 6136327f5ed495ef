"""Which tasks the trials go to: the predictor's estimate of the time each task's kernel takes in the networks.

A task's *weight* is its calls per image, summed over the two networks ``compile`` builds from the blocks: the LAS
network at the tuning rate and its static counterpart (the stem, pooling and classifier belong to both). Its
*predicted_ms* is the time those calls take per image, priced by the latency model at the tuning size (the LAS
kernels at ``P = rate x g*g`` active patches). MetaSchedule's gradient task scheduler minimises
``sum(weight x measured latency)``, i.e. the two networks' latency; :func:`plan` orders the tasks by
``predicted_ms`` and, when the trials cannot reach every task (each task's first search round measures
``per_iter`` candidates), gives them to the tasks that matter most; the others keep their default schedule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..block_plan import block_plan
from ..predictor.kernel_ops import predict_step
from ..predictor.network import active_patches, head_ops, stem_ops
from ..predictor.ops import op_latency
from .static_ops import STATIC_KERNEL
from .tasks import task_key

#: Static operators (legalized PrimFunc names) and the predictor op of the stem or head they are.
_STATIC_OPS = (("pool", re.compile(r"max_pool")), ("avgpool", re.compile(r"avg_pool|mean")),
               ("conv", re.compile(r"conv")), ("fc", re.compile(r"matmul|dense|linear")))


@dataclass(frozen=True)
class Priority:
    """A task's share of the predicted time: ``calls`` per image over both networks, and their
    ``predicted_ms`` per image."""

    calls: int
    predicted_ms: float

    def to_json(self) -> dict:
        return {"calls": self.calls, "predicted_ms": round(self.predicted_ms, 6)}


def _add(acc: dict, key: str, calls: int, ms: float) -> None:
    c, m = acc.get(key, (0, 0.0))
    acc[key] = (c + calls, m + ms)


def _static_op_ms(spec, hw) -> dict[str, float]:
    """Predicted ms of the stem and head ops by kind (``conv``: the stem conv, ``pool``: its max-pool, ...)."""
    out: dict[str, float] = {}
    for op in stem_ops(spec) + head_ops(spec):
        kind = {"stem_conv": "conv", "stem_maxpool": "pool"}.get(op.name, op.name)
        out[kind] = out.get(kind, 0.0) + op_latency(op, hw).total * 1e3
    return out


def task_priorities(spec, blocks, tasks, hw, rate: float, fusion: str = "all") -> dict[str, Priority]:
    """``{task key: Priority}`` for ``tasks`` (:class:`~.tasks.Task` and :class:`~.static_ops.StaticTask`) of
    ``blocks`` (some or all of ``spec.blocks``), on the hardware profile ``hw`` at activation ``rate``. A static
    operator the predictor does not model gets weight 1 and 0 ms."""
    acc: dict[str, tuple[int, float]] = {}
    for b in blocks:
        P = max(1, active_patches(b, rate))
        for st in block_plan(b, fusion, inplace_residual=True):
            _add(acc, task_key(st.kernel, st.params), 1, predict_step(st, P, hw) * 1e3)
        for st in block_plan(b, static=True):
            _add(acc, task_key(st.kernel, st.params), 1, predict_step(st, 0, hw) * 1e3)
    static_ms = _static_op_ms(spec, hw)
    out = {}
    for t in tasks:
        if t.kernel == STATIC_KERNEL:
            kind = next((k for k, pat in _STATIC_OPS if pat.search(t.params["op"])), None)
            out[t.key] = Priority(2, 2 * static_ms[kind]) if kind in static_ms else Priority(1, 0.0)
        else:
            calls, ms = acc.get(t.key, (1, 0.0))
            out[t.key] = Priority(calls, ms)
    return out


def plan(tasks: list, priorities: dict[str, Priority] | None, trials: int, per_iter: int) -> tuple[list, list]:
    """``(searched, weights)``: the tasks MetaSchedule searches, most important first (its first round visits
    them in this order), and their weights (calls per image). Without ``priorities`` every task, weight 1, in
    the given order; with them, the ``max(1, trials // per_iter)`` tasks of largest ``predicted_ms``."""
    if not priorities:
        return list(tasks), [1.0] * len(tasks)
    ranked = sorted(tasks, key=lambda t: -priorities[t.key].predicted_ms)
    searched = ranked[: max(1, trials // max(1, per_iter))]
    return searched, [float(priorities[t.key].calls) for t in searched]


__all__ = ["Priority", "plan", "task_priorities"]
