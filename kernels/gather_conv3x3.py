"""Fused gather + 3x3 conv on the active patches (and the plain window conv of the unfused variant).

For each of the ``P`` active patch indices (``P`` symbolic: one compiled function serves every ``P``), the
kernel reads the patch and its halo straight from the conv1 map ``f1 [C, H, W]`` (zero outside the image),
applies the 3x3 conv (stride, groups), adds the bias, applies ReLU and writes ``out [P, C, S, S]``.

Weights: the padded form takes them packed ``[C // wb, C // groups, 3, 3, wb]`` (:func:`.shapes.pack_weight_3x3`,
``wb = weight_block(C, groups)``) so that a tile of output channels reads one contiguous stream of weights;
the window form takes ``[C // groups, 3, 3, C]`` (``w2.permute(1, 2, 3, 0)``). Both let the CPU schedule
vectorize over output channels.

The padded form computes ``P`` rounded up to a multiple of :func:`.shapes.patch_block` (the last block repeats the
last active patch and writes nothing), so that small patches (S = 1, 2) share one register tile and every
weight vector loaded serves several output pixels (:func:`patch_tile`).
"""

from __future__ import annotations

from tvm import s_tir
from tvm.script import tirx as T

from ._common import order_channel_tiles
from ._cuda import gemm_tile, schedule_gemm_cuda
from .shapes import (MAX_TILE_FLOATS, WEIGHT_TILE_BYTES, ceil_div, computed_patches, large_weights_3x3, lane_tile,
                     largest_divisor, padded_extent, patch_tile, patch_tiles, weight_block)


def gather_conv3x3(C: int, H: int, W: int, S: int, stride: int = 1, groups: int = 1, padded: bool = False):
    """Build the fused gather-conv3x3 PrimFunc ``(f1, idx, w, b, out)`` for a conv1 map ``[C, H, W]``.

    ``padded=False``: ``f1`` is ``[C, H, W]``; each patch's window is staged (zero outside the image) in a
    per-patch buffer. ``padded=True``: ``f1`` is the zero-bordered ``[C, Hp, Hp]`` map written by
    ``masker_conv1x1(pad=True)``; its window block (no bounds checks) is inlined by the CPU schedule, so that
    the conv reads the map directly, and stages the windows in shared memory on CUDA.
    """
    Ho = ceil_div(H, stride)  # maps are square (H == W)
    g = ceil_div(Ho, S)
    L = (S - 1) * stride + 3
    ipg = C // groups
    opg = C // groups
    Hp = padded_extent(H, S, stride)
    P = T.int32()
    Pb = computed_patches(P, S)  # P rounded up to whole patch blocks
    wb = weight_block(C, groups)

    if padded:

        @T.prim_func(s_tir=True)
        def main_p(f1: T.Buffer((C, Hp, Hp), "float32"), idx_h: T.handle, w: T.Buffer((C // wb, ipg, 3, 3, wb), "float32"),
                   b: T.Buffer((C,), "float32"), out_h: T.handle):
            T.func_attr({"tir.noalias": True})
            idx = T.match_buffer(idx_h, (P,), "int32")
            out = T.match_buffer(out_h, (P, C, S, S), "float32")
            win = T.sblock_alloc_buffer((Pb, C, L, L))
            acc = T.sblock_alloc_buffer((Pb, S, S, C))
            for p, c, a, e in T.grid(Pb, C, L, L):  # each patch's window; inlined into the conv on CPU
                with T.sblock("window"):
                    vp, vc, va, ve = T.axis.remap("SSSS", [p, c, a, e])
                    T.reads(idx[T.min(vp, P - 1)], f1[vc, (idx[T.min(vp, P - 1)] // g) * S * stride + va,
                                                      (idx[T.min(vp, P - 1)] % g) * S * stride + ve])
                    T.writes(win[vp, vc, va, ve])
                    win[vp, vc, va, ve] = f1[vc, (idx[T.min(vp, P - 1)] // g) * S * stride + va,
                                             (idx[T.min(vp, P - 1)] % g) * S * stride + ve]
            for p, y, x, co, rc, kh, kw in T.grid(Pb, S, S, C, ipg, 3, 3):
                with T.sblock("conv"):
                    vp, vy, vx, vco, vrc, vkh, vkw = T.axis.remap("SSSSRRR", [p, y, x, co, rc, kh, kw])
                    with T.init():
                        acc[vp, vy, vx, vco] = T.float32(0)
                    acc[vp, vy, vx, vco] = acc[vp, vy, vx, vco] + win[
                        vp, (vco // opg) * ipg + vrc, vy * stride + vkh, vx * stride + vkw] * w[vco // wb, vrc, vkh, vkw, vco % wb]
            for p, co, y, x in T.grid(P, C, S, S):
                with T.sblock("out"):
                    vp, vco, vy, vx = T.axis.remap("SSSS", [p, co, y, x])
                    out[vp, vco, vy, vx] = T.max(acc[vp, vy, vx, vco] + b[vco], T.float32(0))

        return main_p

    stage, conv = stage_windows(C, H, W, S, stride, P), window_conv(C, S, stride, groups, P)

    @T.prim_func(s_tir=True)
    def main(f1: T.Buffer((C, H, W), "float32"), idx_h: T.handle, w: T.Buffer((ipg, 3, 3, C), "float32"),
             b: T.Buffer((C,), "float32"), out_h: T.handle):
        T.func_attr({"tir.noalias": True})
        idx = T.match_buffer(idx_h, (P,), "int32")
        out = T.match_buffer(out_h, (P, C, S, S), "float32")
        win = T.sblock_alloc_buffer((P, C, L, L))
        acc = T.sblock_alloc_buffer((P, S, S, C))
        stage(f1, idx, win)
        conv(win, w, b, acc, out)

    return main


def stage_windows(C: int, H: int, W: int, S: int, stride: int, P):
    """``T.macro`` ``stage(f1, idx, win)``: copy each active patch's window (patch plus 1-pixel halo, zero outside
    the image) from ``f1 [C, H, W]`` to ``win [P, C, L, L]`` (block ``window``). Shared with :mod:`.gather`."""
    g = ceil_div(ceil_div(H, stride), S)
    L = (S - 1) * stride + 3

    @T.macro
    def stage(f1, idx, win):
        for p, c, a, e in T.grid(P, C, L, L):
            with T.sblock("window"):
                vp, vc, va, ve = T.axis.remap("SSSS", [p, c, a, e])
                T.reads(idx[vp], f1[vc, T.max(T.min((idx[vp] // g) * S * stride + va - 1, H - 1), 0),
                                    T.max(T.min((idx[vp] % g) * S * stride + ve - 1, W - 1), 0)])
                T.writes(win[vp, vc, va, ve])
                win[vp, vc, va, ve] = T.if_then_else(
                    1 <= (idx[vp] // g) * S * stride + va and (idx[vp] // g) * S * stride + va <= H
                    and 1 <= (idx[vp] % g) * S * stride + ve and (idx[vp] % g) * S * stride + ve <= W,
                    f1[vc, T.max(T.min((idx[vp] // g) * S * stride + va - 1, H - 1), 0),
                       T.max(T.min((idx[vp] % g) * S * stride + ve - 1, W - 1), 0)],
                    T.float32(0))

    return stage


def window_conv(C: int, S: int, stride: int, groups: int, P):
    """``T.macro`` ``conv(win, w, b, acc, out)``: the 3x3 conv of the windows ``win [P, C, L, L]`` with weights
    ``w [C // groups, 3, 3, C]`` into ``acc [P, S, S, C]`` (block ``conv``), then bias and ReLU into
    ``out [P, C, S, S]`` (block ``out``). Shared with :mod:`.window_conv3x3`."""
    ipg = opg = C // groups

    @T.macro
    def conv(win, w, b, acc, out):
        for p, y, x, co, rc, kh, kw in T.grid(P, S, S, C, ipg, 3, 3):
            with T.sblock("conv"):
                vp, vy, vx, vco, vrc, vkh, vkw = T.axis.remap("SSSSRRR", [p, y, x, co, rc, kh, kw])
                with T.init():
                    acc[vp, vy, vx, vco] = T.float32(0)
                acc[vp, vy, vx, vco] = acc[vp, vy, vx, vco] + win[
                    vp, (vco // opg) * ipg + vrc, vy * stride + vkh, vx * stride + vkw] * w[vrc, vkh, vkw, vco]
        for p, co, y, x in T.grid(P, C, S, S):
            with T.sblock("out"):
                vp, vco, vy, vx = T.axis.remap("SSSS", [p, co, y, x])
                out[vp, vco, vy, vx] = T.max(acc[vp, vy, vx, vco] + b[vco], T.float32(0))

    return conv


def schedule_gather_conv_cpu(sch: s_tir.Schedule, C: int, S: int, groups: int) -> None:
    """Padded gather-conv (the window block inlined: the conv reads the zero-bordered map directly): a register
    tile of :func:`patch_tile` pixels x ``tco`` output channels (vectorized), under :data:`MAX_TILE_FLOATS`. Channel tiles in parallel (at least 8 of them), so that a thread's weight tile
    stays in its cache while it walks the patches; else patch blocks in parallel."""
    sch.compute_inline(sch.get_sblock("window"))
    conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
    p, y, x, co, rc, kh, kw = sch.get_loops(conv)
    pb, ty, tx = patch_tile(S)
    tco = lane_tile(weight_block(C, groups), max(8, MAX_TILE_FLOATS // (pb * ty * tx)))
    p_o, p_i = sch.split(p, [None, pb])
    y_o, y_i = sch.split(y, [None, ty])
    x_o, x_i = sch.split(x, [None, tx])
    co_o, co_i = sch.split(co, [None, tco])
    sch.unroll(kw)
    order_channel_tiles(sch, conv, out, co_o, co_i, [p_o, y_o, x_o], [rc, kh, kw], [p_i, y_i, x_i])


def schedule_patch_conv_cpu(sch: s_tir.Schedule, C: int, S: int, groups: int, window: bool = False) -> None:
    """Vectorize the ``conv`` block over output channels, register-tile over x.

    Weights ``[C/groups, 3, 3, C]`` up to :data:`.shapes.LARGE_WEIGHT_BYTES`: patches in parallel, each
    patch's whole reduction in registers. Large weights (deep stages, where every patch would stream megabytes
    of weights): channel tiles in parallel and the reduction split so that one weight tile stays in cache
    while all patches use it (partial sums in the ``acc`` buffer). The per-patch ``window`` staging of the
    unpadded variant always uses the first form.
    Shared by :mod:`gather_conv3x3` and :mod:`window_conv3x3`.
    """
    conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
    p, y, x, co, rc, kh, kw = sch.get_loops(conv)
    tx, tco = patch_tiles(C, S, groups)
    ipg = C // groups
    co_o, co_i = sch.split(co, [None, tco])
    x_o, x_i = sch.split(x, [None, tx])
    if window or not large_weights_3x3(C, groups):
        sch.reorder(p, co_o, y, x_o, rc, kh, kw, x_i, co_i)
        sch.parallel(p)
        # Small constant "global" allocations become stack arrays on CPU (LLVM keeps them in registers);
        # "local" ones would go through TVMBackendAllocWorkspace.
        sch.reverse_compute_at(out, x_o)
        if window:  # stage each patch's window (unpadded conv1 map)
            win = sch.get_sblock("window")
            sch.compute_at(win, p)
            sch.set_scope(win, 0, "global")
        init_at = rc
    else:
        trc = largest_divisor(ipg, max(1, WEIGHT_TILE_BYTES // (9 * tco * 4)))
        rc_o, rc_i = sch.split(rc, [None, trc])
        sch.reorder(co_o, rc_o, p, y, x_o, rc_i, kh, kw, x_i, co_i)
        sch.parallel(co_o)
        sch.reverse_compute_at(out, co_o)
        init_at = rc_o
    sch.unroll(kw)
    sch.unroll(x_i)
    sch.vectorize(co_i)
    sch.decompose_reduction(conv, init_at)


def schedule_cpu(func, **params) -> s_tir.Schedule:
    """Default CPU schedule: :func:`schedule_gather_conv_cpu` (padded); unpadded: patches in parallel, each
    patch's window staged, co-vectorized conv (:func:`schedule_patch_conv_cpu`)."""
    sch = s_tir.Schedule(func)
    if params.get("padded", False):
        schedule_gather_conv_cpu(sch, params["C"], params["S"], params.get("groups", 1))
    else:
        schedule_patch_conv_cpu(sch, params["C"], params["S"], params.get("groups", 1), window=True)
    return sch


def schedule_cuda(func, **params) -> s_tir.Schedule:
    """Implicit GEMM (:func:`~._cuda.schedule_gemm_cuda`): active pixels x output channels, per step of input
    channels the block's patch windows (gathered through the patch indices while loaded, zero outside the image
    for the unpadded map) and weights staged in shared memory."""
    C, groups = params["C"], params.get("groups", 1)
    sch = s_tir.Schedule(func)
    tile = gemm_tile(None, C, C // groups, taps=9, group_width=C // groups if groups > 1 else None)
    schedule_gemm_cuda(sch, sch.get_sblock("conv"), [sch.get_sblock("out")], 3, tile,
                       a_loader=sch.get_sblock("window"), b_read="w", patch_pixels=params["S"] ** 2)
    return sch
