"""Dense squeeze-excitation (static RegNetY block): mean over all pixels, fc1, ReLU, fc2, sigmoid, scale."""

from __future__ import annotations

from tvm import s_tir
from tvm.script import tirx as T

from ._common import bind_spatial_cuda


def se_dense(C: int, R: int, H: int, W: int):
    """Build ``(x [C, H, W], w1 [R, C], b1 [R], w2 [C, R], b2 [C], out [C, H, W])``."""

    @T.prim_func(s_tir=True)
    def main(x: T.Buffer((C, H, W), "float32"), w1: T.Buffer((R, C), "float32"), b1: T.Buffer((R,), "float32"),
             w2: T.Buffer((C, R), "float32"), b2: T.Buffer((C,), "float32"), out: T.Buffer((C, H, W), "float32")):
        T.func_attr({"tir.noalias": True})
        pool = T.sblock_alloc_buffer((C,))
        hid = T.sblock_alloc_buffer((R,))
        logit = T.sblock_alloc_buffer((C,))
        scale = T.sblock_alloc_buffer((C,))
        for c, h, w in T.grid(C, H, W):
            with T.sblock("pool"):
                vc, vh, vw = T.axis.remap("SRR", [c, h, w])
                with T.init():
                    pool[vc] = T.float32(0)
                pool[vc] = pool[vc] + x[vc, vh, vw]
        for r, c in T.grid(R, C):
            with T.sblock("fc1"):
                vr, vc = T.axis.remap("SR", [r, c])
                with T.init():
                    hid[vr] = b1[vr]
                hid[vr] = hid[vr] + w1[vr, vc] * (pool[vc] / T.float32(H * W))
        for c, r in T.grid(C, R):
            with T.sblock("fc2"):
                vc, vr = T.axis.remap("SR", [c, r])
                with T.init():
                    logit[vc] = b2[vc]
                logit[vc] = logit[vc] + w2[vc, vr] * T.max(hid[vr], T.float32(0))
        for c in range(C):
            with T.sblock("sig"):
                vc = T.axis.spatial(C, c)
                scale[vc] = T.sigmoid(logit[vc])
        for c, h, w in T.grid(C, H, W):
            with T.sblock("scale"):
                vc, vh, vw = T.axis.remap("SSS", [c, h, w])
                out[vc, vh, vw] = x[vc, vh, vw] * scale[vc]

    return main


def schedule_cpu(func, **params) -> s_tir.Schedule:
    sch = s_tir.Schedule(func)
    sch.parallel(sch.get_loops(sch.get_sblock("pool"))[0])
    c, h, w = sch.get_loops(sch.get_sblock("scale"))
    sch.parallel(c)
    sch.vectorize(w)
    return sch


def schedule_cuda(func, **params) -> s_tir.Schedule:
    sch = s_tir.Schedule(func)
    for name in ("pool", "fc1", "fc2", "sig"):
        blk = sch.get_sblock(name)
        lo = sch.get_loops(blk)[0]
        bx, tx = sch.split(lo, [None, 32])
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
    bind_spatial_cuda(sch, sch.get_sblock("scale"), 256)
    return sch
