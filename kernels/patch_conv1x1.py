"""conv3 on the active patches: ``[P, C_in, S, S] -> [P, C_out, S, S]`` plus bias (no activation).

A batched GEMM per patch; the CPU schedule vectorizes over the ``S * S`` pixels of a patch (contiguous).
``P`` is symbolic. Weights ``w [C_out, C_in]``.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.script import tirx as T

from ._common import SearchSpace, bind_spatial_cuda, largest_divisor, vec_width

SEARCH_SPACE = SearchSpace(specialize={"P": 0.5})


def patch_conv1x1(C_in: int, C_out: int, S: int):
    """Build the PrimFunc ``(x [P, C_in, S, S], w [C_out, C_in], b [C_out], out [P, C_out, S, S])``."""
    P = T.int32()

    @T.prim_func(s_tir=True)
    def main(x_h: T.handle, w: T.Buffer((C_out, C_in), "float32"), b: T.Buffer((C_out,), "float32"),
             out_h: T.handle):
        T.func_attr({"tir.noalias": True})
        x = T.match_buffer(x_h, (P, C_in, S, S), "float32")
        out = T.match_buffer(out_h, (P, C_out, S, S), "float32")
        acc = T.sblock_alloc_buffer((P, C_out, S, S))
        for p, co, y, xx, k in T.grid(P, C_out, S, S, C_in):
            with T.sblock("conv"):
                vp, vco, vy, vx, vk = T.axis.remap("SSSSR", [p, co, y, xx, k])
                with T.init():
                    acc[vp, vco, vy, vx] = T.float32(0)
                acc[vp, vco, vy, vx] = acc[vp, vco, vy, vx] + w[vco, vk] * x[vp, vk, vy, vx]
        for p, co, y, xx in T.grid(P, C_out, S, S):
            with T.sblock("out"):
                vp, vco, vy, vx = T.axis.remap("SSSS", [p, co, y, xx])
                out[vp, vco, vy, vx] = acc[vp, vco, vy, vx] + b[vco]

    return main


def schedule_cpu(func, **params) -> s_tir.Schedule:
    """Patches in parallel; per patch a register-tiled GEMM (``tc`` channels x ``S*S`` pixels, vectorized)."""
    C_out, S = params["C_out"], params["S"]
    sch = s_tir.Schedule(func)
    conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
    p, co, y, x, k = sch.get_loops(conv)
    pix = sch.fuse(y, x)
    tp = vec_width(S * S, 16)
    tc = largest_divisor(C_out, max(1, 64 // max(tp, 8)))
    pix_o, pix_i = sch.split(pix, [None, tp])
    co_o, co_i = sch.split(co, [None, tc])
    sch.reorder(p, co_o, pix_o, k, co_i, pix_i)
    sch.parallel(p)
    sch.reverse_compute_at(out, pix_o)
    sch.unroll(co_i)
    sch.vectorize(pix_i)
    sch.decompose_reduction(conv, k)
    return sch


def schedule_cuda(func, **params) -> s_tir.Schedule:
    """One CUDA block per patch, one thread per (output channel, pixel), serial reduction."""
    sch = s_tir.Schedule(func)
    conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
    p, co, y, x, k = sch.get_loops(conv)
    sch.bind(p, "blockIdx.x")
    t = sch.fuse(co, y, x)
    _, ti = sch.split(t, [None, 64])
    sch.bind(ti, "threadIdx.x")
    sch.set_scope(conv, 0, "local")
    sch.reverse_compute_at(out, ti)
    return sch
