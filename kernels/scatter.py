"""Unfused scatter: a zero canvas ``[C, Ho, Wo]`` with the active patches ``[P, C, S, S]`` written in place
(clipped at the border). Followed by :mod:`add_relu` in the unfused block."""

from __future__ import annotations

from tvm import s_tir
from tvm.script import tirx as T

from ._common import bind_spatial_cuda
from .shapes import ceil_div


def scatter(C: int, Ho: int, Wo: int, S: int):
    """Build ``(patches [P, C, S, S], idx [P], canvas [C, Ho, Wo])``."""
    g = ceil_div(Ho, S)
    P = T.int32()

    @T.prim_func(s_tir=True)
    def main(patches_h: T.handle, idx_h: T.handle, canvas: T.Buffer((C, Ho, Wo), "float32")):
        T.func_attr({"tir.noalias": True})
        patches = T.match_buffer(patches_h, (P, C, S, S), "float32")
        idx = T.match_buffer(idx_h, (P,), "int32")
        for c, h, w in T.grid(C, Ho, Wo):
            with T.sblock("zero"):
                vc, vh, vw = T.axis.remap("SSS", [c, h, w])
                canvas[vc, vh, vw] = T.float32(0)
        for p, c, y, x in T.grid(P, C, S, S):
            with T.sblock("put"):
                vp, vc, vy, vx = T.axis.remap("SSSS", [p, c, y, x])
                T.reads(idx[vp], patches[vp, vc, vy, vx])
                T.writes(canvas[vc, 0:Ho, 0:Wo])
                if (idx[vp] // g) * S + vy < Ho and (idx[vp] % g) * S + vx < Wo:
                    canvas[vc, (idx[vp] // g) * S + vy, (idx[vp] % g) * S + vx] = patches[vp, vc, vy, vx]

    return main


def schedule_cpu(func, **params) -> s_tir.Schedule:
    sch = s_tir.Schedule(func)
    z = sch.get_loops(sch.get_sblock("zero"))
    sch.parallel(z[0])
    sch.vectorize(z[2])
    sch.parallel(sch.get_loops(sch.get_sblock("put"))[0])
    return sch


def schedule_cuda(func, **params) -> s_tir.Schedule:
    sch = s_tir.Schedule(func)
    bind_spatial_cuda(sch, sch.get_sblock("zero"), 256)
    bind_spatial_cuda(sch, sch.get_sblock("put"), 256)
    return sch
