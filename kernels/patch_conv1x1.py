"""conv3 on the active patches: ``[P, C_in, S, S] -> [P, C_out, S, S]`` plus bias (no activation).

A GEMM per patch. Weights are ``wt [C_in, C_out]`` (``w3.T``) so that the CPU schedule vectorizes over output
channels, which works for every S (S = 1 patches have a single pixel). ``P`` is symbolic.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.script import tirx as T

from ._common import SearchSpace, co_tile, largest_divisor

SEARCH_SPACE = SearchSpace(specialize={"P": 0.5})

#: Weights (bytes) from which the CPU schedule makes channel tiles the outer (parallel) loop, so that a
#: ``[C_in, tc]`` weight tile serves every patch from L2 (measured on a 2-core Zen 3: better for LAS-ResNet-50
#: stages 3-4, 1 and 4 MiB of weights; worse for stages 1-2).
LARGE_WEIGHT_BYTES = 1024 * 1024


def patch_conv1x1(C_in: int, C_out: int, S: int):
    """Build the PrimFunc ``(x [P, C_in, S, S], wt [C_in, C_out], b [C_out], out [P, C_out, S, S])``."""
    P = T.int32()

    @T.prim_func(s_tir=True)
    def main(x_h: T.handle, wt: T.Buffer((C_in, C_out), "float32"), b: T.Buffer((C_out,), "float32"),
             out_h: T.handle):
        T.func_attr({"tir.noalias": True})
        x = T.match_buffer(x_h, (P, C_in, S, S), "float32")
        out = T.match_buffer(out_h, (P, C_out, S, S), "float32")
        acc = T.sblock_alloc_buffer((P, S, S, C_out))
        for p, y, xx, co, k in T.grid(P, S, S, C_out, C_in):
            with T.sblock("conv"):
                vp, vy, vx, vco, vk = T.axis.remap("SSSSR", [p, y, xx, co, k])
                with T.init():
                    acc[vp, vy, vx, vco] = T.float32(0)
                acc[vp, vy, vx, vco] = acc[vp, vy, vx, vco] + x[vp, vk, vy, vx] * wt[vk, vco]
        for p, co, y, xx in T.grid(P, C_out, S, S):
            with T.sblock("out"):
                vp, vco, vy, vx = T.axis.remap("SSSS", [p, co, y, xx])
                out[vp, vco, vy, vx] = acc[vp, vy, vx, vco] + b[vco]

    return main


def schedule_cpu(func, **params) -> s_tir.Schedule:
    """Register tile of ``tp`` pixels x ``tc`` channels (vectorized): about 8 AVX2 accumulators, ``4 x 16`` for
    S >= 2, ``1 x 64`` for S = 1. Patches in parallel, or channel tiles for large weights
    (:data:`LARGE_WEIGHT_BYTES`)."""
    C_out, S = params["C_out"], params["S"]
    sch = s_tir.Schedule(func)
    conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
    p, y, x, co, k = sch.get_loops(conv)
    pix = sch.fuse(y, x)
    tp = largest_divisor(S * S, 4)
    if S % tp and tp % S:  # a tile must not straddle rows partially (e.g. S = 14: 4 pixels would)
        tp = largest_divisor(S, 4)
    tc = co_tile(C_out, 1, max(16, 64 // tp))
    pix_o, pix_i = sch.split(pix, [None, tp])
    co_o, co_i = sch.split(co, [None, tc])
    if params["C_in"] * C_out * 4 >= LARGE_WEIGHT_BYTES:  # weights out of L2: walk all patches per channel tile
        sch.reorder(co_o, p, pix_o, k, pix_i, co_i)
        sch.parallel(co_o)
        sch.reverse_compute_at(out, pix_o)
    else:
        sch.reorder(p, pix_o, co_o, k, pix_i, co_i)
        sch.parallel(p)
        sch.reverse_compute_at(out, co_o)  # accumulator tile: small "global" alloc -> stack -> registers
    sch.unroll(pix_i)
    sch.vectorize(co_i)
    sch.decompose_reduction(conv, k)
    return sch


def schedule_cuda(func, **params) -> s_tir.Schedule:
    """One CUDA block per patch, one thread per (pixel, output channel), serial reduction."""
    sch = s_tir.Schedule(func)
    conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
    p, y, x, co, k = sch.get_loops(conv)
    sch.bind(p, "blockIdx.x")
    t = sch.fuse(y, x, co)
    _, ti = sch.split(t, [None, 64])
    sch.bind(ti, "threadIdx.x")
    sch.set_scope(conv, 0, "local")
    sch.reverse_compute_at(out, ti)
    return sch
