"""Unfused residual: ``out = relu(identity + canvas)`` elementwise over ``[C, H, W]``."""

from __future__ import annotations

from tvm import s_tir
from tvm.script import tirx as T

from ._common import bind_spatial_cuda


def add_relu(C: int, H: int, W: int):
    """Build ``(a [C, H, W], b [C, H, W], out [C, H, W])``."""

    @T.prim_func(s_tir=True)
    def main(a: T.Buffer((C, H, W), "float32"), b: T.Buffer((C, H, W), "float32"),
             out: T.Buffer((C, H, W), "float32")):
        T.func_attr({"tir.noalias": True})
        for c, h, w in T.grid(C, H, W):
            with T.sblock("add"):
                vc, vh, vw = T.axis.remap("SSS", [c, h, w])
                out[vc, vh, vw] = T.max(a[vc, vh, vw] + b[vc, vh, vw], T.float32(0))

    return main


def schedule_cpu(func, **params) -> s_tir.Schedule:
    sch = s_tir.Schedule(func)
    c, h, w = sch.get_loops(sch.get_sblock("add"))
    sch.parallel(sch.fuse(c, h))
    sch.vectorize(w)
    return sch


def schedule_cuda(func, **params) -> s_tir.Schedule:
    sch = s_tir.Schedule(func)
    bind_spatial_cuda(sch, sch.get_sblock("add"), 256)
    return sch
