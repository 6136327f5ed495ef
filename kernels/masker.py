"""Unfused masker (paper Table 1 "no fusion"): pool the block input per coarse patch, 1x1 conv to the logit
difference, threshold, compact the active indices. Outputs as :mod:`masker_conv1x1` (``mask``, ``idx``,
``count``). Weights ``wm [C_in]`` and ``bm [1]``.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.script import tirx as T

from ._compact import chunking, compaction, schedule_compaction_cuda
from .shapes import ceil_div


def masker(C_in: int, H: int, W: int, S: int, stride: int = 1):
    """Build ``(x [C_in, H, W], wm [C_in], bm [1], mask [g*g], idx [g*g], count [1])``."""
    Ho = ceil_div(H, stride)
    g = ceil_div(Ho, S)
    pin = S * stride
    G = g * g
    compact, NT = compaction(G), chunking(G)[0]

    @T.prim_func(s_tir=True)
    def main(x: T.Buffer((C_in, H, W), "float32"), wm: T.Buffer((C_in,), "float32"),
             bm: T.Buffer((1,), "float32"), mask: T.Buffer((G,), "int32"), idx: T.Buffer((G,), "int32"),
             count: T.Buffer((1,), "int32")):
        T.func_attr({"tir.noalias": True})
        pooled = T.sblock_alloc_buffer((C_in, G))
        diff = T.sblock_alloc_buffer((G,))
        csum = T.sblock_alloc_buffer((NT,), "int32")
        for c, p, a, e in T.grid(C_in, G, pin, pin):
            with T.sblock("pool"):
                vc, vp, va, ve = T.axis.remap("SSRR", [c, p, a, e])
                with T.init():
                    pooled[vc, vp] = T.float32(0)
                pooled[vc, vp] = pooled[vc, vp] + T.if_then_else(
                    (vp // g) * pin + va < H and (vp % g) * pin + ve < W,
                    x[vc, T.min((vp // g) * pin + va, H - 1), T.min((vp % g) * pin + ve, W - 1)], T.float32(0))
        for p, c in T.grid(G, C_in):
            with T.sblock("conv"):
                vp, vc = T.axis.remap("SR", [p, c])
                with T.init():
                    diff[vp] = T.float32(0)
                diff[vp] = diff[vp] + wm[vc] * (pooled[vc, vp] / T.Cast(
                    "float32", T.min(pin, H - (vp // g) * pin) * T.min(pin, W - (vp % g) * pin)))
        for p in range(G):
            with T.sblock("decide"):
                vp = T.axis.spatial(G, p)
                mask[vp] = T.Select(diff[vp] + bm[0] >= T.float32(0), 1, 0)
        compact(mask, idx, count, csum)

    return main


def schedule_cpu(func, **params) -> s_tir.Schedule:
    """Pooling parallel over input channels; the rest is tiny and serial."""
    sch = s_tir.Schedule(func)
    sch.parallel(sch.get_loops(sch.get_sblock("pool"))[0])
    return sch


def schedule_cuda(func, **params) -> s_tir.Schedule:
    """Pooling one thread per (channel, patch); logit one thread per patch; compaction in one thread block
    (:func:`~._compact.schedule_compaction_cuda`)."""
    sch = s_tir.Schedule(func)
    for name, n in (("pool", 2), ("conv", 1), ("decide", 1)):
        blk = sch.get_sblock(name)
        loops = sch.get_loops(blk)[:n]
        f = sch.fuse(*loops) if n > 1 else loops[0]
        bx, tx = sch.split(f, [None, 64])
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
    schedule_compaction_cuda(sch)
    return sch
