"""Unfused gather: copy each active patch's window (patch plus 1-pixel halo, zero outside the image) from the
conv1 map ``[C, H, W]`` to ``win [P, C, L, L]``, ``L = (S - 1) * stride + 3`` (``P`` symbolic)."""

from __future__ import annotations

from tvm import s_tir
from tvm.script import tirx as T

from ._common import bind_spatial_cuda
from .gather_conv3x3 import stage_windows


def gather(C: int, H: int, W: int, S: int, stride: int = 1):
    """Build ``(f1 [C, H, W], idx [P], win [P, C, L, L])``."""
    L = (S - 1) * stride + 3
    P = T.int32()

    stage = stage_windows(C, H, W, S, stride, P)

    @T.prim_func(s_tir=True)
    def main(f1: T.Buffer((C, H, W), "float32"), idx_h: T.handle, win_h: T.handle):
        T.func_attr({"tir.noalias": True})
        idx = T.match_buffer(idx_h, (P,), "int32")
        win = T.match_buffer(win_h, (P, C, L, L), "float32")
        stage(f1, idx, win)

    return main


def schedule_cpu(func, **params) -> s_tir.Schedule:
    """Parallel over patches (the copy is memory bound)."""
    sch = s_tir.Schedule(func)
    sch.parallel(sch.get_loops(sch.get_sblock("window"))[0])
    return sch


def schedule_cuda(func, **params) -> s_tir.Schedule:
    sch = s_tir.Schedule(func)
    bind_spatial_cuda(sch, sch.get_sblock("window"), 256)
    return sch
