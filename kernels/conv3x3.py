"""Dense 3x3 conv (static block's conv2): stride, groups, zero padding 1, bias, ReLU.

``x [C, H, W] -> out [C, Ho, Wo]``; weights packed ``[C // wb, C // groups, 3, 3, wb]`` like the padded
:mod:`gather_conv3x3` (:func:`~.shapes.pack_weight_3x3`), with the same kind of output-channel-vectorized
register tiles, so the static baseline gets kernels as good as the dynamic block's.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.script import tirx as T

from ._common import order_channel_tiles
from ._cuda import gemm_tile, schedule_gemm_cuda
from .shapes import MAX_TILE_FLOATS, ceil_div, dense_padded_extent, lane_tile, largest_divisor, weight_block


def conv3x3(C: int, H: int, W: int, stride: int = 1, groups: int = 1, padded: bool = False):
    """Build ``(x [C, H, W], w [C // wb, C // groups, 3, 3, wb], b [C], out [C, Ho, Wo])``.

    ``padded=True``: ``x`` is already zero-bordered (``[C, Hq, Wq]`` as written by
    ``conv1x1(pad_for=stride)``); the padding pass is skipped.
    """
    Ho, Wo = ceil_div(H, stride), ceil_div(W, stride)
    Hp, Wp = (Ho - 1) * stride + 3, (Wo - 1) * stride + 3
    Hq, Wq = (dense_padded_extent(H, stride), dense_padded_extent(W, stride)) if padded else (H, W)
    ipg = C // groups
    opg = C // groups
    wb = weight_block(C, groups)

    @T.prim_func(s_tir=True)
    def main(x: T.Buffer((C, Hq, Wq), "float32"), w: T.Buffer((C // wb, ipg, 3, 3, wb), "float32"),
             b: T.Buffer((C,), "float32"), out: T.Buffer((C, Ho, Wo), "float32")):
        T.func_attr({"tir.noalias": True})
        pad = T.sblock_alloc_buffer((C, Hp, Wp))
        acc = T.sblock_alloc_buffer((Ho, Wo, C))
        for c, a, e in T.grid(C, Hp, Wp):
            with T.sblock("pad"):
                vc, va, ve = T.axis.remap("SSS", [c, a, e])
                if padded:
                    pad[vc, va, ve] = x[vc, va, ve]
                else:
                    pad[vc, va, ve] = T.if_then_else(
                        1 <= va and va <= H and 1 <= ve and ve <= W,
                        x[vc, T.max(T.min(va - 1, H - 1), 0), T.max(T.min(ve - 1, W - 1), 0)], T.float32(0))
        for i, j, co, rc, kh, kw in T.grid(Ho, Wo, C, ipg, 3, 3):
            with T.sblock("conv"):
                vi, vj, vco, vrc, vkh, vkw = T.axis.remap("SSSRRR", [i, j, co, rc, kh, kw])
                with T.init():
                    acc[vi, vj, vco] = T.float32(0)
                acc[vi, vj, vco] = acc[vi, vj, vco] + pad[
                    (vco // opg) * ipg + vrc, vi * stride + vkh, vj * stride + vkw] * w[vco // wb, vrc, vkh, vkw, vco % wb]
        for co, i, j in T.grid(C, Ho, Wo):
            with T.sblock("out"):
                vco, vi, vj = T.axis.remap("SSS", [co, i, j])
                out[vco, vi, vj] = T.max(acc[vi, vj, vco] + b[vco], T.float32(0))

    return main


def schedule_cpu(func, **params) -> s_tir.Schedule:
    """Register tile of ``ty`` rows x ``tx`` columns (up to 14 pixels) x ``tco`` output channels (vectorized,
    one packed weight block); channel tiles in parallel (at least 8 of them), else rows."""
    C, groups, stride = params["C"], params.get("groups", 1), params.get("stride", 1)
    Ho, Wo = ceil_div(params["H"], stride), ceil_div(params["W"], stride)
    sch = s_tir.Schedule(func)
    conv, out, pad = sch.get_sblock("conv"), sch.get_sblock("out"), sch.get_sblock("pad")
    i, j, co, rc, kh, kw = sch.get_loops(conv)
    tx = largest_divisor(Wo, 14)
    ty = largest_divisor(Ho, max(1, 14 // tx))
    tco = lane_tile(weight_block(C, groups), max(8, MAX_TILE_FLOATS // (tx * ty)))
    co_o, co_i = sch.split(co, [None, tco])
    i_o, i_i = sch.split(i, [None, ty])
    j_o, j_i = sch.split(j, [None, tx])
    sch.unroll(kw)
    order_channel_tiles(sch, conv, out, co_o, co_i, [i_o, j_o], [rc, kh, kw], [i_i, j_i])
    if params.get("padded"):
        sch.compute_inline(pad)  # read the zero-bordered input directly
    else:
        sch.parallel(sch.get_loops(pad)[0])
    return sch


def schedule_cuda(func, **params) -> s_tir.Schedule:
    """Implicit GEMM (:func:`~._cuda.schedule_gemm_cuda`): output pixels x output channels; per step of input
    channels the padding block stages the block's input rows (zero border included) in shared memory, the
    weights beside them."""
    C, groups, stride = params["C"], params.get("groups", 1), params.get("stride", 1)
    M = ceil_div(params["H"], stride) * ceil_div(params["W"], stride)
    sch = s_tir.Schedule(func)
    tile = gemm_tile(M, C, C // groups, taps=9, group_width=C // groups if groups > 1 else None)
    schedule_gemm_cuda(sch, sch.get_sblock("conv"), [sch.get_sblock("out")], 2, tile,
                       a_im2col="pad", inline=[sch.get_sblock("pad")], b_read="w",
                       group_width=C // groups if groups > 1 else 0)
    return sch
