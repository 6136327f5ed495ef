"""conv3 on the active patches: ``[P, C_in, S, S] -> [P, C_out, S, S]`` plus bias (no activation).

A GEMM over the patches' pixels. Weights are packed ``[C_out // cb, C_in, cb]``
(:func:`~.shapes.pack_weight_1x1`) so that a tile of output channels reads one contiguous stream of weights and the
CPU schedule vectorizes over output channels, which works for every S (S = 1 patches have a single pixel).
``P`` is symbolic; like the padded gather-conv, the kernel computes ``P`` rounded up to whole patch blocks
(:func:`~.shapes.patch_block`: several small patches share a register tile) and writes ``P``.

With ``Ho > 0`` the kernel also does the in-place scatter-add (:func:`~.scatter_add.scatter_add`,
``inplace=True``) in its epilogue: each output tile is added into the block input ``ident [C_out, Ho, Ho]`` at
its patch and passed through ReLU there, so that the patches never go through memory and the block needs one
kernel call less. ``ident`` must be non-negative (a ReLU output), as for the in-place scatter-add.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.script import tirx as T

from ._common import order_channel_tiles
from ._cuda import gemm_tile, schedule_gemm_cuda
from .shapes import MAX_TILE_FLOATS, ceil_div, co_block, computed_patches, lane_tile, patch_tile


def patch_conv1x1(C_in: int, C_out: int, S: int, Ho: int = 0):
    """Build the PrimFunc ``(x [P, C_in, S, S], w [C_out // cb, C_in, cb], b [C_out], out [P, C_out, S, S])``,
    or with ``Ho > 0`` ``(ident [C_out, Ho, Ho], x, idx [P], w, b)`` adding ``relu(ident + conv)`` into ``ident``
    at the patches ``idx`` (edge patches clipped to the map)."""
    P = T.int32()
    Pb = computed_patches(P, S)  # P rounded up to whole patch blocks
    cb = co_block(C_out)

    @T.macro
    def conv(x, w, acc):  # acc [Pb, S, S, C_out] = x w over P rounded up to whole patch blocks
        for p, y, xx, co, k in T.grid(Pb, S, S, C_out, C_in):
            with T.sblock("conv"):
                vp, vy, vx, vco, vk = T.axis.remap("SSSSR", [p, y, xx, co, k])
                T.writes(acc[vp, vy, vx, vco])
                with T.init():
                    acc[vp, vy, vx, vco] = T.float32(0)
                acc[vp, vy, vx, vco] = (acc[vp, vy, vx, vco]
                                        + x[T.min(vp, P - 1), vk, vy, vx] * w[vco // cb, vk, vco % cb])

    if Ho:  # conv3 with the in-place scatter-add as its epilogue
        g = ceil_div(Ho, S)
        clipped = Ho % S != 0  # edge patches overhang the map: check every pixel

        @T.prim_func(s_tir=True)
        def main(ident: T.Buffer((C_out, Ho, Ho), "float32"), x_h: T.handle, idx_h: T.handle,
                     w: T.Buffer((C_out // cb, C_in, cb), "float32"), b: T.Buffer((C_out,), "float32")):
            T.func_attr({"tir.noalias": True})
            x = T.match_buffer(x_h, (P, C_in, S, S), "float32")
            idx = T.match_buffer(idx_h, (P,), "int32")
            # the identity read and written through two views of its memory, as in scatter_add(inplace=True)
            dst = T.decl_buffer((C_out, Ho, Ho), "float32", data=ident.data)
            acc = T.sblock_alloc_buffer((Pb, S, S, C_out))
            conv(x, w, acc)
            for p, co, y, xx in T.grid(P, C_out, S, S):
                with T.sblock("out"):
                    vp, vco, vy, vx = T.axis.remap("SSSS", [p, co, y, xx])
                    T.reads(ident[vco, 0:Ho, 0:Ho], acc[vp, vy, vx, vco], b[vco], idx[vp])
                    T.writes(dst[vco, 0:Ho, 0:Ho])
                    if clipped:
                        if (idx[vp] // g) * S + vy < Ho and (idx[vp] % g) * S + vx < Ho:
                            dst[vco, (idx[vp] // g) * S + vy, (idx[vp] % g) * S + vx] = T.max(
                                ident[vco, (idx[vp] // g) * S + vy, (idx[vp] % g) * S + vx] + acc[vp, vy, vx, vco]
                                + b[vco], T.float32(0))
                    else:
                        dst[vco, (idx[vp] // g) * S + vy, (idx[vp] % g) * S + vx] = T.max(
                            ident[vco, (idx[vp] // g) * S + vy, (idx[vp] % g) * S + vx] + acc[vp, vy, vx, vco]
                            + b[vco], T.float32(0))

        return main

    @T.prim_func(s_tir=True)
    def main(x_h: T.handle, w: T.Buffer((C_out // cb, C_in, cb), "float32"), b: T.Buffer((C_out,), "float32"),
             out_h: T.handle):
        T.func_attr({"tir.noalias": True})
        x = T.match_buffer(x_h, (P, C_in, S, S), "float32")
        out = T.match_buffer(out_h, (P, C_out, S, S), "float32")
        acc = T.sblock_alloc_buffer((Pb, S, S, C_out))
        conv(x, w, acc)
        for p, co, y, xx in T.grid(P, C_out, S, S):
            with T.sblock("out"):
                vp, vco, vy, vx = T.axis.remap("SSSS", [p, co, y, xx])
                out[vp, vco, vy, vx] = acc[vp, vy, vx, vco] + b[vco]

    return main


def schedule_cpu(func, **params) -> s_tir.Schedule:
    """Register tile of :func:`~.gather_conv3x3.patch_tile` pixels x ``tco`` output channels (vectorized);
    channel tiles in parallel (at least 8), else patch blocks; the epilogue (bias, or the scatter-add) per tile."""
    C_out, S = params["C_out"], params["S"]
    sch = s_tir.Schedule(func)
    conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
    p, y, x, co, k = sch.get_loops(conv)
    pb, ty, tx = patch_tile(S)
    tco = lane_tile(co_block(C_out), max(8, MAX_TILE_FLOATS // (pb * ty * tx)))
    p_o, p_i = sch.split(p, [None, pb])
    y_o, y_i = sch.split(y, [None, ty])
    x_o, x_i = sch.split(x, [None, tx])
    co_o, co_i = sch.split(co, [None, tco])
    order_channel_tiles(sch, conv, out, co_o, co_i, [p_o, y_o, x_o], [k], [p_i, y_i, x_i])
    return sch


def schedule_cuda(func, **params) -> s_tir.Schedule:
    """Implicit GEMM (:func:`~._cuda.schedule_gemm_cuda`): the patches' pixels x output channels, input and weight
    tiles staged in shared memory per step of input channels; the bias (or the scatter-add into the identity
    with ReLU) on each thread's register tile."""
    sch = s_tir.Schedule(func)
    tile = gemm_tile(None, params["C_out"], params["C_in"])
    schedule_gemm_cuda(sch, sch.get_sblock("conv"), [sch.get_sblock("out")], 3, tile, a_im2col="x", b_read="w")
    return sch
