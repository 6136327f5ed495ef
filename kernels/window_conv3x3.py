"""Unfused 3x3 conv on gathered windows ``[P, C, L, L]`` -> ``[P, C, S, S]`` (bias, ReLU; no padding).

The second half of the unfused gather + conv pair (paper Table 1 ablation); same schedule as the fused
:mod:`gather_conv3x3` minus the window staging. Weights in ``[C // groups, 3, 3, C]`` layout.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.script import tirx as T

from ._cuda import gemm_tile, schedule_gemm_cuda
from .gather_conv3x3 import schedule_patch_conv_cpu, window_conv


def window_conv3x3(C: int, S: int, stride: int = 1, groups: int = 1):
    """Build the PrimFunc ``(win [P, C, L, L], w, b, out [P, C, S, S])``, ``L = (S - 1) * stride + 3``."""
    L = (S - 1) * stride + 3
    P = T.int32()

    conv = window_conv(C, S, stride, groups, P)

    @T.prim_func(s_tir=True)
    def main(win_h: T.handle, w: T.Buffer((C // groups, 3, 3, C), "float32"), b: T.Buffer((C,), "float32"),
             out_h: T.handle):
        T.func_attr({"tir.noalias": True})
        win = T.match_buffer(win_h, (P, C, L, L), "float32")
        out = T.match_buffer(out_h, (P, C, S, S), "float32")
        acc = T.sblock_alloc_buffer((P, S, S, C))
        conv(win, w, b, acc, out)

    return main


def schedule_cpu(func, **params) -> s_tir.Schedule:
    sch = s_tir.Schedule(func)
    schedule_patch_conv_cpu(sch, params["C"], params["S"], params.get("groups", 1))
    return sch


def schedule_cuda(func, **params) -> s_tir.Schedule:
    """Implicit GEMM (:func:`~._cuda.schedule_gemm_cuda`): pixels x output channels, windows and weights staged
    in shared memory per step of input channels."""
    C, groups = params["C"], params.get("groups", 1)
    sch = s_tir.Schedule(func)
    tile = gemm_tile(None, C, C // groups, taps=9, group_width=C // groups if groups > 1 else None)
    schedule_gemm_cuda(sch, sch.get_sblock("conv"), [sch.get_sblock("out")], 3, tile, a_read="win", b_read="w",
                       patch_pixels=params["S"] ** 2)
    return sch
