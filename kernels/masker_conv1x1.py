"""Fused masker + conv1 (paper Appendix B.1, Eq. 3): one 1x1 conv with ``C_mid + 1`` output channels.

Channels ``0..C_mid-1`` are conv1 (bias, ReLU) written to ``f1 [C_mid, H, W]``; the extra channel is the
masker logit difference ``wm . x`` per pixel, pooled over each coarse patch's clipped input area, plus ``bm``
and thresholded (``>= 0``). One pass over the input serves both. The kernel also writes ``mask [g*g]``
(int32 0/1), the compact row-major list of active patch indices ``idx [g*g]`` (first ``count[0]`` entries
valid) and ``count [1]``.

Weights: conv1 ``w`` packed ``[C_mid // cb, C_in, cb]`` (:func:`~.shapes.pack_weight_1x1`) with bias ``b [C_mid]``,
and the masker channel ``wm [C_in]``, ``bm [1]``.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.script import tirx as T

from ._cuda import gemm_tile, schedule_gemm_cuda
from ._gemm import schedule_conv1x1_cpu
from ._compact import chunking, compaction, schedule_compaction_cuda
from .shapes import ceil_div, co_block, padded_extent


def masker_conv1x1(C_in: int, C_mid: int, H: int, W: int, S: int, stride: int = 1, pad: bool = False):
    """Build the fused masker/conv1 PrimFunc for a block input ``[C_in, H, W]`` (``H == W``).

    With ``pad=True`` ``f1`` is ``[C_mid, Hp, Hp]`` (``Hp`` from :func:`~._common.padded_extent`) with pixel
    ``(i, j)`` at ``(i + 1, j + 1)``; the kernel never writes the border, which the caller zeroes once, so
    :func:`~.gather_conv3x3.gather_conv3x3` (``padded=True``) reads windows without bounds checks.
    """
    Ho = ceil_div(H, stride)
    Hp = padded_extent(H, S, stride) if pad else H
    off = 1 if pad else 0
    g = ceil_div(Ho, S)
    pin = S * stride  # patch side in input pixels
    G = g * g
    compact, NT = compaction(G), chunking(G)[0]
    cb = co_block(C_mid)

    @T.prim_func(s_tir=True)
    def main(x: T.Buffer((C_in, H, W), "float32"), w: T.Buffer((C_mid // cb, C_in, cb), "float32"),
             b: T.Buffer((C_mid,), "float32"), wm: T.Buffer((C_in,), "float32"), bm: T.Buffer((1,), "float32"),
             f1: T.Buffer((C_mid, Hp, Hp), "float32"),
             mask: T.Buffer((G,), "int32"), idx: T.Buffer((G,), "int32"), count: T.Buffer((1,), "int32")):
        T.func_attr({"tir.noalias": True})
        acc = T.sblock_alloc_buffer((C_mid, H, W))
        md = T.sblock_alloc_buffer((H, W))
        ps = T.sblock_alloc_buffer((G,))
        csum = T.sblock_alloc_buffer((NT,), "int32")
        for co, i, j, k in T.grid(C_mid, H, W, C_in):
            with T.sblock("conv"):
                vco, vi, vj, vk = T.axis.remap("SSSR", [co, i, j, k])
                with T.init():
                    acc[vco, vi, vj] = T.float32(0)
                acc[vco, vi, vj] = acc[vco, vi, vj] + w[vco // cb, vk, vco % cb] * x[vk, vi, vj]
        for co, i, j in T.grid(C_mid, H, W):
            with T.sblock("epi"):
                vco, vi, vj = T.axis.remap("SSS", [co, i, j])
                f1[vco, vi + off, vj + off] = T.max(acc[vco, vi, vj] + b[vco], T.float32(0))
        for i, j, k in T.grid(H, W, C_in):  # the masker's channel: logit difference per pixel
            with T.sblock("logit"):
                vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                with T.init():
                    md[vi, vj] = T.float32(0)
                md[vi, vj] = md[vi, vj] + wm[vk] * x[vk, vi, vj]
        for p, a, c in T.grid(G, pin, pin):
            with T.sblock("pool"):
                vp, va, vc = T.axis.remap("SRR", [p, a, c])
                with T.init():
                    ps[vp] = T.float32(0)
                ps[vp] = ps[vp] + T.if_then_else(
                    (vp // g) * pin + va < H and (vp % g) * pin + vc < W,
                    md[T.min((vp // g) * pin + va, H - 1), T.min((vp % g) * pin + vc, W - 1)], T.float32(0))
        for p in range(G):
            with T.sblock("decide"):
                vp = T.axis.spatial(G, p)
                mask[vp] = T.Select(
                    ps[vp] / T.Cast("float32", T.min(pin, H - (vp // g) * pin) * T.min(pin, W - (vp % g) * pin))
                    + bm[0] >= T.float32(0), 1, 0)
        compact(mask, idx, count, csum)

    return main


def schedule_cpu(func, **params) -> s_tir.Schedule:
    """Default CPU schedule: register-tiled conv1 over ``C_mid`` channels (:func:`~._gemm.schedule_conv1x1_cpu`);
    the masker channel in its own loop, parallel over rows and vectorized over columns; pooling/compaction
    serial (:mod:`._compact`)."""
    C_mid, H, W = params["C_mid"], params["H"], params["W"]
    sch = s_tir.Schedule(func)
    conv, epi = sch.get_sblock("conv"), sch.get_sblock("epi")
    schedule_conv1x1_cpu(sch, conv, epi, C_mid, H, W)
    logit = sch.get_sblock("logit")
    i, j, k = sch.get_loops(logit)
    sch.reorder(i, k, j)
    sch.parallel(i)
    sch.vectorize(j)
    sch.decompose_reduction(logit, k)
    return sch


def schedule_cuda(func, **params) -> s_tir.Schedule:
    """Default CUDA schedule: conv1 as an implicit GEMM (:func:`~._cuda.schedule_gemm_cuda`, its bias/ReLU on the
    register tiles); the masker channel one thread per pixel; pooling and decision one thread per patch."""
    sch = s_tir.Schedule(func)
    tile = gemm_tile(params["H"] * params["W"], params["C_mid"], params["C_in"])
    schedule_gemm_cuda(sch, sch.get_sblock("conv"), [sch.get_sblock("epi")], 0, tile, a_im2col="x", b_read="w")
    logit = sch.get_sblock("logit")
    i, j, k = sch.get_loops(logit)
    bx, tx = sch.split(sch.fuse(i, j), [None, 64])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    for name in ("pool", "decide"):
        blk = sch.get_sblock(name)
        loops = sch.get_loops(blk)
        bx, tx = sch.split(loops[0], [None, 64])
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
    schedule_compaction_cuda(sch)  # the compaction in one thread block
    return sch
