"""The LAS compiler's passes (one per module) and what the scheduling passes share."""

from __future__ import annotations

from typing import Callable

import tvm
from tvm import tirx


def unscheduled(func) -> bool:
    """Whether ``func`` is a PrimFunc no pass has scheduled yet (no ``tir.is_scheduled``)."""
    return isinstance(func, tirx.PrimFunc) and not (func.attrs and "tir.is_scheduled" in func.attrs)


def schedule_each(mod: tvm.IRModule, schedule: Callable[[tirx.PrimFunc], tirx.PrimFunc | None]) -> tvm.IRModule:
    """``mod`` with ``schedule(func)`` in place of every unscheduled PrimFunc ``func`` (None: ``func`` stays
    as it is), given ``func``'s attributes and marked ``tir.is_scheduled``."""
    updates = {}
    for gv, func in mod.functions_items():
        if unscheduled(func):
            new = schedule(func)
            if new is not None:
                for k, v in dict(func.attrs or {}).items():
                    new = new.with_attr(k, v)
                updates[gv] = new.with_attr("tir.is_scheduled", True)
    for gv, func in updates.items():
        mod[gv] = func
    return mod
