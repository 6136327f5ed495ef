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
from . import schedule_each
from .lower_las_blocks import KERNEL_ATTR, PARAMS_ATTR, rebound, unbounded


def _default_schedule(func: tirx.PrimFunc, target: tvm.target.Target) -> tirx.PrimFunc | None:
    """A tagged kernel PrimFunc under its default schedule; None for any other function."""
    if func.attrs is None or KERNEL_ATTR not in func.attrs:
        return None
    params = json.loads(str(func.attrs[PARAMS_ATTR]))
    bare = unbounded(func).without_attr("global_symbol")
    return rebound(func, K.scheduled(str(func.attrs[KERNEL_ATTR]), target, bare, **params).mod["main"])


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
        return schedule_each(mod, lambda func: _default_schedule(func, self.target))
