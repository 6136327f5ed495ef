"""Dense 1x1 conv with stride (static block's conv1/conv3, dense conv1 of the unfused block, downsample
branch): ``out = act(w x[:, ::stride, ::stride] + b)``, ``act`` = ReLU or identity, or with a residual input
``out = relu(w x + b + r)`` (the static block's conv3, its residual add + ReLU as the GEMM epilogue). Weights
packed ``[C_out // cb, C_in, cb]`` (:func:`~.shapes.pack_weight_1x1`)."""

from __future__ import annotations

from tvm import s_tir
from tvm.script import tirx as T

from ._cuda import gemm_tile, schedule_gemm_cuda
from ._gemm import schedule_conv1x1_cpu
from .shapes import ceil_div, co_block, dense_padded_extent


def conv1x1(C_in: int, C_out: int, H: int, W: int, stride: int = 1, relu: bool = True, pad_for: int = 0,
            residual: bool = False):
    """Build ``(x [C_in, H, W], w [C_out // cb, C_in, cb], b [C_out], out [C_out, Ho, Wo])``.

    ``residual=True`` adds an input ``r [C_out, Ho, Wo]`` before ``out``: ``out = relu(w x + b + r)``.
    ``pad_for = s > 0`` stores ``out`` inside a border that the caller zeroes once (pixel ``(i, j)`` at
    ``(i + 1, j + 1)``, side ``dense_padded_extent(Ho, s)``) so that a following 3x3 conv with stride
    ``s`` (:mod:`conv3x3`, ``padded=True``) needs no padding pass.
    """
    Ho, Wo = ceil_div(H, stride), ceil_div(W, stride)
    Hq = dense_padded_extent(Ho, pad_for) if pad_for else Ho
    Wq = dense_padded_extent(Wo, pad_for) if pad_for else Wo
    off = 1 if pad_for else 0
    cb = co_block(C_out)
    if residual:
        return _residual_conv1x1(C_in, C_out, H, W, stride, cb)

    @T.prim_func(s_tir=True)
    def main(x: T.Buffer((C_in, H, W), "float32"), w: T.Buffer((C_out // cb, C_in, cb), "float32"),
             b: T.Buffer((C_out,), "float32"), out: T.Buffer((C_out, Hq, Wq), "float32")):
        T.func_attr({"tir.noalias": True})
        acc = T.sblock_alloc_buffer((C_out, Ho, Wo))
        for co, i, j, k in T.grid(C_out, Ho, Wo, C_in):
            with T.sblock("conv"):
                vco, vi, vj, vk = T.axis.remap("SSSR", [co, i, j, k])
                with T.init():
                    acc[vco, vi, vj] = T.float32(0)
                acc[vco, vi, vj] = acc[vco, vi, vj] + w[vco // cb, vk, vco % cb] * x[vk, vi * stride, vj * stride]
        for co, i, j in T.grid(C_out, Ho, Wo):
            with T.sblock("epi"):
                vco, vi, vj = T.axis.remap("SSS", [co, i, j])
                if relu:
                    out[vco, vi + off, vj + off] = T.max(acc[vco, vi, vj] + b[vco], T.float32(0))
                else:
                    out[vco, vi + off, vj + off] = acc[vco, vi, vj] + b[vco]
    return main


def _residual_conv1x1(C_in: int, C_out: int, H: int, W: int, stride: int, cb: int):
    Ho, Wo = ceil_div(H, stride), ceil_div(W, stride)

    @T.prim_func(s_tir=True)
    def main(x: T.Buffer((C_in, H, W), "float32"), w: T.Buffer((C_out // cb, C_in, cb), "float32"),
             b: T.Buffer((C_out,), "float32"), r: T.Buffer((C_out, Ho, Wo), "float32"),
             out: T.Buffer((C_out, Ho, Wo), "float32")):
        T.func_attr({"tir.noalias": True})
        acc = T.sblock_alloc_buffer((C_out, Ho, Wo))
        for co, i, j, k in T.grid(C_out, Ho, Wo, C_in):
            with T.sblock("conv"):
                vco, vi, vj, vk = T.axis.remap("SSSR", [co, i, j, k])
                with T.init():
                    acc[vco, vi, vj] = T.float32(0)
                acc[vco, vi, vj] = acc[vco, vi, vj] + w[vco // cb, vk, vco % cb] * x[vk, vi * stride, vj * stride]
        for co, i, j in T.grid(C_out, Ho, Wo):
            with T.sblock("epi"):
                vco, vi, vj = T.axis.remap("SSS", [co, i, j])
                out[vco, vi, vj] = T.max(acc[vco, vi, vj] + b[vco] + r[vco, vi, vj], T.float32(0))
    return main


def schedule_cpu(func, **params) -> s_tir.Schedule:
    """Register-tiled GEMM (:func:`~._gemm.schedule_conv1x1_cpu`, shared with :mod:`masker_conv1x1`)."""
    stride = params.get("stride", 1)
    Ho, Wo = ceil_div(params["H"], stride), ceil_div(params["W"], stride)
    sch = s_tir.Schedule(func)
    schedule_conv1x1_cpu(sch, sch.get_sblock("conv"), sch.get_sblock("epi"), params["C_out"], Ho, Wo, stride)
    return sch


def schedule_cuda(func, **params) -> s_tir.Schedule:
    """Implicit GEMM (:func:`~._cuda.schedule_gemm_cuda`): output pixels x output channels, input and weight tiles
    staged in shared memory per step of input channels."""
    stride = params.get("stride", 1)
    M = ceil_div(params["H"], stride) * ceil_div(params["W"], stride)
    sch = s_tir.Schedule(func)
    tile = gemm_tile(M, params["C_out"], params["C_in"])
    schedule_gemm_cuda(sch, sch.get_sblock("conv"), [sch.get_sblock("epi")], 0, tile, a_im2col="x", b_read="w")
    return sch
