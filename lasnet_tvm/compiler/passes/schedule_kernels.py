"""ScheduleKernels: give every LAS kernel its tuned schedule (from a MetaSchedule database) or its default one.

PrimFuncs added by ``LowerLASBlocks`` carry their kernel name and builder parameters; this pass re-applies
the kernel module's ``schedule_cpu`` / ``schedule_cuda`` (or the database's best trace when one matches the
workload) and marks the result ``tir.is_scheduled`` so later default rules leave it alone. With a database,
it also gives the static operators their tuned schedules
(:func:`~.schedule_static_ops.apply_tuned_static_ops`); ``ScheduleStaticOps`` schedules the rest.
"""

from __future__ import annotations

import json

import tvm
from tvm import tirx

from ... import kernels as K
from .lower_las_blocks import KERNEL_ATTR, PARAMS_ATTR
from .schedule_static_ops import apply_tuned_static_ops


def schedule_kernel(func: tirx.PrimFunc, target: tvm.target.Target, database=None) -> tirx.PrimFunc:
    """The scheduled form of a tagged kernel PrimFunc (tuned record first, else the default schedule)."""
    name = str(func.attrs[KERNEL_ATTR])
    params = json.loads(str(func.attrs[PARAMS_ATTR]))
    attrs = dict(func.attrs)
    bare = func.without_attr("global_symbol")
    scheduled = None
    if database is not None:
        scheduled = database.query_schedule(name, params, bare, target)
    if scheduled is None:
        scheduled = K.scheduled(name, target, bare, **params).mod["main"]
    for k, v in attrs.items():
        scheduled = scheduled.with_attr(k, v)
    return scheduled.with_attr("tir.is_scheduled", True)


@tvm.transform.module_pass(opt_level=0, name="ScheduleKernels")
class ScheduleKernels:
    """Schedule the LAS kernels of a module for ``target``.

    Parameters
    ----------
    target : tvm.target.Target
    database : optional
        An object with ``query_schedule(kernel, params, func, target) -> PrimFunc | None`` and
        ``query_static(func, target)`` (:class:`lasnet_tvm.tuning.TunedSchedules`); None uses the default
        schedules.
    """

    def __init__(self, target, database=None):
        self.target, self.database = target, database

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        updates = {}
        for gv, func in mod.functions_items():
            if isinstance(func, tirx.PrimFunc) and func.attrs is not None and KERNEL_ATTR in func.attrs:
                updates[gv] = schedule_kernel(func, self.target, self.database)
        for gv, func in updates.items():
            mod[gv] = func
        return apply_tuned_static_ops(mod, self.target, self.database)
