"""conv1 on the active patches' windows (the separate masker placement), written into conv1's zero-bordered map.

For each of the ``P`` active patch indices (``P`` symbolic), the kernel applies the 1x1 conv (bias, ReLU) to the
``L x L`` window of input positions that the block's 3x3 conv reads for that patch (patch plus 1-pixel halo,
``L = (S - 1) * stride + 3``; the 3x3 conv has the block's stride, conv1 has none) and writes it where
``masker_conv1x1(pad=True)`` would: into ``f1 [C_out, Hp, Hp]`` (:func:`~.shapes.padded_extent`), pixel
``(i, j)`` at ``(i + 1, j + 1)``, with ``0`` where the window lies outside the map (the 3x3 conv's zero padding,
not ``relu(bias)``). Every value that the padded :mod:`.gather_conv3x3` then reads, and only those, is written:
the rest of the map is never read and needs no zeroing. Overlapping windows write the same values.

conv1 thus runs only around the active patches, halos recomputed per patch (``(L / S)^2 * r`` of the dense
conv1's work): the block's masker runs first, alone (:mod:`.masker`), on the block input.

Weights packed ``[C_out // cb, C_in, cb]`` (:func:`~.shapes.pack_weight_1x1`), as the other 1x1 convs, so that a
tile of output channels reads one contiguous stream of weights and the CPU schedule vectorizes over them.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.script import tirx as T

from ._common import order_channel_tiles
from ._cuda import gemm_tile, schedule_gemm_cuda
from .shapes import MAX_TILE_FLOATS, ceil_div, co_block, lane_tile, largest_divisor, padded_extent


def window_pixels_tile(L: int) -> int:
    """Window pixels per CPU register tile: the largest divisor of ``L * L`` up to 12 (whole tiles, no ragged
    last one)."""
    return largest_divisor(L * L, 12)


def gather_conv1x1(C_in: int, C_out: int, H: int, W: int, S: int, stride: int = 1):
    """Build the PrimFunc ``(x [C_in, H, W], idx [P], w [C_out // cb, C_in, cb], b [C_out], f1 [C_out, Hp, Hp])``.

    The window of patch ``i`` (row ``i // g``, column ``i % g`` of the ``g x g`` patch grid) starts at input
    position ``((i // g) * S * stride - 1, (i % g) * S * stride - 1)``, at ``f1[:, (i // g) * S * stride,
    (i % g) * S * stride]``.
    """
    Ho = ceil_div(H, stride)
    g = ceil_div(Ho, S)
    L = (S - 1) * stride + 3
    LL = L * L
    step = S * stride  # patch pitch in input pixels
    Hp = padded_extent(H, S, stride)
    P = T.int32()
    cb = co_block(C_out)

    @T.prim_func(s_tir=True)
    def main(x: T.Buffer((C_in, H, W), "float32"), idx_h: T.handle, w: T.Buffer((C_out // cb, C_in, cb), "float32"),
             b: T.Buffer((C_out,), "float32"), f1: T.Buffer((C_out, Hp, Hp), "float32")):
        T.func_attr({"tir.noalias": True})
        idx = T.match_buffer(idx_h, (P,), "int32")
        acc = T.sblock_alloc_buffer((P, LL, C_out))
        for p, q, co, k in T.grid(P, LL, C_out, C_in):
            with T.sblock("conv"):
                vp, vq, vco, vk = T.axis.remap("SSSR", [p, q, co, k])
                with T.init():
                    acc[vp, vq, vco] = T.float32(0)
                # positions outside the map read a clamped pixel: the epilogue writes 0 there
                # (T.min(vp, P - 1): the CUDA schedule's tiles may run past the last patch)
                acc[vp, vq, vco] = acc[vp, vq, vco] + x[
                    vk, T.max(T.min((idx[T.min(vp, P - 1)] // g) * step + vq // L - 1, H - 1), 0),
                    T.max(T.min((idx[T.min(vp, P - 1)] % g) * step + vq % L - 1, W - 1), 0),
                ] * w[vco // cb, vk, vco % cb]
        for p, co, q in T.grid(P, C_out, LL):
            with T.sblock("out"):
                vp, vco, vq = T.axis.remap("SSS", [p, co, q])
                T.reads(idx[vp], acc[vp, vq, vco], b[vco])
                T.writes(f1[vco, 0:Hp, 0:Hp])
                f1[vco, (idx[vp] // g) * step + vq // L, (idx[vp] % g) * step + vq % L] = T.if_then_else(
                    1 <= (idx[vp] // g) * step + vq // L and (idx[vp] // g) * step + vq // L <= H
                    and 1 <= (idx[vp] % g) * step + vq % L and (idx[vp] % g) * step + vq % L <= W,
                    T.max(acc[vp, vq, vco] + b[vco], T.float32(0)), T.float32(0))

    return main


def schedule_cpu(func, **params) -> s_tir.Schedule:
    """Register tile of :func:`window_pixels_tile` window pixels x ``tco`` output channels (vectorized, each
    input pixel broadcast); channel tiles in parallel when there are at least 8 of them, else patches
    (:func:`~._common.order_channel_tiles`); the epilogue (bias, ReLU, zero outside the map) per tile."""
    C_out, S, stride = params["C_out"], params["S"], params.get("stride", 1)
    L = (S - 1) * stride + 3
    sch = s_tir.Schedule(func)
    conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
    p, q, co, k = sch.get_loops(conv)
    tq = window_pixels_tile(L)
    tco = lane_tile(co_block(C_out), max(8, MAX_TILE_FLOATS // tq))
    q_o, q_i = sch.split(q, [None, tq])
    co_o, co_i = sch.split(co, [None, tco])
    order_channel_tiles(sch, conv, out, co_o, co_i, [p, q_o], [k], [q_i])
    return sch


def schedule_cuda(func, **params) -> s_tir.Schedule:
    """Implicit GEMM (:func:`~._cuda.schedule_gemm_cuda`): the windows' pixels x output channels, the gathered
    input tile (im2col through the patch indices) and the weight tile staged in shared memory per step of input
    channels; bias, ReLU and the zero outside the map on each thread's register tile."""
    sch = s_tir.Schedule(func)
    tile = gemm_tile(None, params["C_out"], params["C_in"])
    schedule_gemm_cuda(sch, sch.get_sblock("conv"), [sch.get_sblock("out")], 2, tile, a_im2col="x", b_read="w")
    return sch
