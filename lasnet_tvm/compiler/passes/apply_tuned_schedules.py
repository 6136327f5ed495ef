"""ApplyTunedSchedules: the tuned schedule of every LAS kernel and static operator that has one.

Tuned schedules reach the compiler through one contract, :class:`ScheduleDatabase` (implemented by
:class:`lasnet_tvm.tuning.TunedSchedules`, the ``lasnet-tvm tune`` databases). This pass runs before the
default-schedule passes (``ScheduleKernels``, ``ScheduleStaticOps``): a function given its tuned schedule is
marked ``tir.is_scheduled``, so that they leave it alone, and :data:`TUNED_ATTR`, so that the compile manifest
can list it (:func:`tuned_functions`).
"""

from __future__ import annotations

import json
from typing import Protocol

import tvm
from tvm import tirx

from ... import kernels as K
from . import schedule_each
from .lower_las_blocks import KERNEL_ATTR, PARAMS_ATTR, rebound, unbounded

TUNED_ATTR = "lasnet.tuned"  # on every PrimFunc given a tuned schedule
IMPORTED_ATTR = "lasnet.imported"  # set by a database on a tuned schedule imported from an offline round


class ScheduleDatabase(Protocol):
    """Where tuned schedules come from. Each query returns ``func`` under its tuned schedule, or None where
    there is none (the function then gets its default schedule)."""

    def query_schedule(self, kernel: str, params: dict, func: tirx.PrimFunc, target) -> tirx.PrimFunc | None:
        """``func``, the LAS kernel ``kernel(**params)`` (:mod:`lasnet_tvm.kernels`), tuned for ``target``."""

    def query_static(self, func: tirx.PrimFunc, target) -> tirx.PrimFunc | None:
        """``func``, a legalized static operator (stem, pooling, classifier), tuned for ``target``."""

    def describe(self) -> dict:
        """Where the schedules come from (JSON-able), for the compile manifest."""


def _tuned(database: ScheduleDatabase, func: tirx.PrimFunc, target) -> tirx.PrimFunc | None:
    attrs = func.attrs or {}
    bare = unbounded(func)
    bare = bare.without_attr("global_symbol") if "global_symbol" in attrs else bare
    if KERNEL_ATTR in attrs:
        if str(attrs[KERNEL_ATTR]) in K.UNTUNED:
            return None
        params = json.loads(str(attrs[PARAMS_ATTR]))
        tuned = rebound(func, database.query_schedule(str(attrs[KERNEL_ATTR]), params, bare, target))
    else:
        tuned = database.query_static(bare, target)
    return None if tuned is None else tuned.with_attr(TUNED_ATTR, True)


@tvm.transform.module_pass(opt_level=0, name="ApplyTunedSchedules")
class ApplyTunedSchedules:
    """Give every unscheduled PrimFunc its tuned schedule from ``database`` where it has one.

    Parameters
    ----------
    target : tvm.target.Target
    database : ScheduleDatabase or None
        None: nothing is tuned (the pass leaves the module as it is).
    """

    def __init__(self, target, database: ScheduleDatabase | None):
        self.target, self.database = target, database

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        if self.database is None:
            return mod
        return schedule_each(mod, lambda func: _tuned(self.database, func, self.target))


def tuned_functions(mod: tvm.IRModule, attr: str = TUNED_ATTR) -> list[str]:
    """Names of the functions of ``mod`` that :class:`ApplyTunedSchedules` gave a tuned schedule (``attr``
    :data:`IMPORTED_ATTR`: those whose schedule was imported from offline tuning)."""
    return sorted(gv.name_hint for gv, f in mod.functions_items()
                  if isinstance(f, tirx.PrimFunc) and f.attrs is not None and attr in f.attrs)
