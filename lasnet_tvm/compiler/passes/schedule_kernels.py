"""ScheduleKernels: give every LAS kernel not scheduled yet its default schedule.

PrimFuncs added by ``LowerLASBlocks`` carry their kernel name and builder parameters; this pass applies the
kernel's default schedule for the target (:func:`lasnet_tvm.kernels.scheduled`) to those that
``ApplyTunedSchedules`` left unscheduled and marks the result ``tir.is_scheduled``.
"""

from __future__ import annotations

import json

import tvm
from tvm import tirx

from ... import kernels as K
from .lower_las_blocks import KERNEL_ATTR, PARAMS_ATTR
from .schedule_static_ops import unscheduled


def _default_schedule(func: tirx.PrimFunc, target: tvm.target.Target) -> tirx.PrimFunc:
    """A tagged kernel PrimFunc under its default schedule (its attributes kept)."""
    params = json.loads(str(func.attrs[PARAMS_ATTR]))
    scheduled = K.scheduled(str(func.attrs[KERNEL_ATTR]), target, func.without_attr("global_symbol"),
                            **params).mod["main"]
    for k, v in dict(func.attrs).items():
        scheduled = scheduled.with_attr(k, v)
    return scheduled.with_attr("tir.is_scheduled", True)


@tvm.transform.module_pass(opt_level=0, name="ScheduleKernels")
class ScheduleKernels:
    """Default schedules for the unscheduled LAS kernels of a module.

    Parameters
    ----------
    target : tvm.target.Target
    """

    def __init__(self, target):
        self.target = target

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        updates = {gv: _default_schedule(func, self.target) for gv, func in mod.functions_items()
                   if unscheduled(func) and func.attrs is not None and KERNEL_ATTR in func.attrs}
        for gv, func in updates.items():
            mod[gv] = func
        return mod
