"""Squeeze-excitation (RegNetY) on the active patches.

Pools the conv2 output over the *valid* pixels of the active patches (clipped edge pixels excluded), then
``fc1 -> relu -> fc2 -> sigmoid`` and scales every patch channel. ``P`` is symbolic; with ``P = 0`` the
pooled vector is 0. Writes a new ``[P, C, S, S]`` buffer.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.script import tirx as T

from ._common import bind_spatial_cuda
from .shapes import ceil_div


def se_patches(C: int, R: int, Ho: int, S: int):
    """Build ``(x [P, C, S, S], idx [P], w1 [R, C], b1 [R], w2 [C, R], b2 [C], out [P, C, S, S])``."""
    g = ceil_div(Ho, S)
    P = T.int32()

    @T.prim_func(s_tir=True)
    def main(x_h: T.handle, idx_h: T.handle, w1: T.Buffer((R, C), "float32"), b1: T.Buffer((R,), "float32"),
             w2: T.Buffer((C, R), "float32"), b2: T.Buffer((C,), "float32"), out_h: T.handle):
        T.func_attr({"tir.noalias": True})
        x = T.match_buffer(x_h, (P, C, S, S), "float32")
        idx = T.match_buffer(idx_h, (P,), "int32")
        out = T.match_buffer(out_h, (P, C, S, S), "float32")
        cnt = T.sblock_alloc_buffer((1,), "float32")
        pool = T.sblock_alloc_buffer((C,), "float32")
        hid = T.sblock_alloc_buffer((R,), "float32")
        logit = T.sblock_alloc_buffer((C,), "float32")
        scale = T.sblock_alloc_buffer((C,), "float32")
        for p in range(P):
            with T.sblock("count"):
                vp = T.axis.reduce(P, p)
                with T.init():
                    cnt[0] = T.float32(0)
                cnt[0] = cnt[0] + T.Cast("float32", T.min(S, Ho - (idx[vp] // g) * S)
                                         * T.min(S, Ho - (idx[vp] % g) * S))
        for c, p, y, xx in T.grid(C, P, S, S):
            with T.sblock("pool"):
                vc, vp, vy, vx = T.axis.remap("SRRR", [c, p, y, xx])
                with T.init():
                    pool[vc] = T.float32(0)
                pool[vc] = pool[vc] + T.if_then_else(
                    (idx[vp] // g) * S + vy < Ho and (idx[vp] % g) * S + vx < Ho, x[vp, vc, vy, vx], T.float32(0))
        for r, c in T.grid(R, C):
            with T.sblock("fc1"):
                vr, vc = T.axis.remap("SR", [r, c])
                with T.init():
                    hid[vr] = b1[vr]
                hid[vr] = hid[vr] + w1[vr, vc] * (pool[vc] / T.max(cnt[0], T.float32(1)))
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
        for p, c, y, xx in T.grid(P, C, S, S):
            with T.sblock("scale"):
                vp, vc, vy, vx = T.axis.remap("SSSS", [p, c, y, xx])
                out[vp, vc, vy, vx] = x[vp, vc, vy, vx] * scale[vc]

    return main


def schedule_cpu(func, **params) -> s_tir.Schedule:
    """Pool parallel over channels; the tiny FCs serial; scaling parallel over patches, vectorized."""
    sch = s_tir.Schedule(func)
    c = sch.get_loops(sch.get_sblock("pool"))[0]
    sch.parallel(c)
    loops = sch.get_loops(sch.get_sblock("scale"))
    sch.parallel(loops[0])
    sch.vectorize(sch.fuse(loops[2], loops[3]))
    return sch


def schedule_cuda(func, **params) -> s_tir.Schedule:
    """Each stage its own kernel; reductions serial per thread (C and R are small)."""
    sch = s_tir.Schedule(func)
    blk = sch.get_sblock("count")
    sch.bind(sch.add_unit_loop(blk), "blockIdx.x")
    sch.bind(sch.add_unit_loop(blk), "threadIdx.x")
    for name in ("pool", "fc1", "fc2", "sig"):
        blk = sch.get_sblock(name)
        lo = sch.get_loops(blk)[0]
        bx, tx = sch.split(lo, [None, 32])
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
    bind_spatial_cuda(sch, sch.get_sblock("scale"), 256)
    return sch
