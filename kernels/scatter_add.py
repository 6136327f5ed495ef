"""Fused scatter-add: ``out = relu(identity + patch)`` on active patches, ``relu(identity)`` elsewhere.

One pass over the identity ``[C, Ho, Wo]``; a tiny prologue builds the patch -> slot map from ``idx [P]``
(``P`` symbolic). Clipped edge pixels of a patch are ignored.

``inplace=True`` builds the paper's form for an identity that is already non-negative (a block input: the
output of a ReLU), where ``relu(identity)`` is the identity itself: the active patches are added into the
identity buffer in place, and the cost is proportional to ``P`` instead of the map.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.script import tirx as T

from ._common import bind_spatial_cuda
from .shapes import ceil_div


def scatter_add(C: int, Ho: int, Wo: int, S: int, inplace: bool = False):
    """Build the PrimFunc ``(identity [C, Ho, Wo], patches [P, C, S, S], idx [P], out [C, Ho, Wo])``, or with
    ``inplace`` ``(identity, patches, idx)`` updating ``identity`` (which must be non-negative)."""
    if inplace:
        return _scatter_add_inplace(C, Ho, Wo, S)
    g = ceil_div(Ho, S)
    G = g * g
    P = T.int32()

    @T.prim_func(s_tir=True)
    def main(ident: T.Buffer((C, Ho, Wo), "float32"), patches_h: T.handle, idx_h: T.handle,
             out: T.Buffer((C, Ho, Wo), "float32")):
        T.func_attr({"tir.noalias": True})
        patches = T.match_buffer(patches_h, (P, C, S, S), "float32")
        idx = T.match_buffer(idx_h, (P,), "int32")
        slot = T.sblock_alloc_buffer((G,), "int32")
        for q in range(G):
            with T.sblock("slot_init"):
                vq = T.axis.spatial(G, q)
                slot[vq] = -1
        for p in range(P):  # active patches have distinct indices: the iterations are independent
            with T.sblock("slot_set"):
                vp = T.axis.spatial(P, p)
                T.reads(idx[vp])
                T.writes(slot[0:G])
                slot[idx[vp]] = vp
        for c, h, w in T.grid(C, Ho, Wo):
            with T.sblock("add"):
                vc, vh, vw = T.axis.remap("SSS", [c, h, w])
                T.reads(ident[vc, vh, vw], slot[0:G], patches[0:P, vc, 0:S, 0:S])
                T.writes(out[vc, vh, vw])
                out[vc, vh, vw] = T.max(ident[vc, vh, vw] + T.if_then_else(
                    slot[(vh // S) * g + vw // S] >= 0,
                    patches[T.max(slot[(vh // S) * g + vw // S], 0), vc, vh % S, vw % S], T.float32(0)),
                    T.float32(0))

    return main


def _scatter_add_inplace(C: int, Ho: int, Wo: int, S: int):
    g = ceil_div(Wo, S)
    clipped = Ho % S != 0 or Wo % S != 0  # edge patches overhang the map: check every pixel
    P = T.int32()

    @T.prim_func(s_tir=True)
    def main(ident: T.Buffer((C, Ho, Wo), "float32"), patches_h: T.handle, idx_h: T.handle):
        T.func_attr({"tir.noalias": True})
        patches = T.match_buffer(patches_h, (P, C, S, S), "float32")
        idx = T.match_buffer(idx_h, (P,), "int32")
        # the identity read and written through two views of its memory: each pixel is read, then written by the
        # same iteration, so the blocks' loops may run in parallel
        dst = T.decl_buffer((C, Ho, Wo), "float32", data=ident.data)
        for p, c, y, x in T.grid(P, C, S, S):
            with T.sblock("add"):
                vp, vc, vy, vx = T.axis.remap("SSSS", [p, c, y, x])
                T.reads(ident[vc, 0:Ho, 0:Wo], patches[vp, vc, vy, vx], idx[vp])
                T.writes(dst[vc, 0:Ho, 0:Wo])
                if clipped:
                    if (idx[vp] // g) * S + vy < Ho and (idx[vp] % g) * S + vx < Wo:
                        dst[vc, (idx[vp] // g) * S + vy, (idx[vp] % g) * S + vx] = T.max(
                            ident[vc, (idx[vp] // g) * S + vy, (idx[vp] % g) * S + vx] + patches[vp, vc, vy, vx],
                            T.float32(0))
                else:
                    dst[vc, (idx[vp] // g) * S + vy, (idx[vp] % g) * S + vx] = T.max(
                        ident[vc, (idx[vp] // g) * S + vy, (idx[vp] % g) * S + vx] + patches[vp, vc, vy, vx],
                        T.float32(0))

    return main


def schedule_cpu(func, **params) -> s_tir.Schedule:
    """Parallel over channels and rows; columns split by patch (one slot lookup per patch row segment),
    the ``S`` pixels of a segment vectorized when ``S`` divides the width. In place: parallel over channels,
    each task updating its channel's active patches one after the other (the channel's plane stays in cache),
    patch rows vectorized when no patch is clipped (3-8x faster than one task per (patch, channel) with a
    bounds check per pixel, LAS-ResNet-50's four shapes at r = 0.5)."""
    S, Wo = params["S"], params["Wo"]
    sch = s_tir.Schedule(func)
    add = sch.get_sblock("add")
    if params.get("inplace"):
        p, c, y, x = sch.get_loops(add)
        sch.reorder(c, p)
        sch.parallel(c)
        if S > 1 and params["Ho"] % S == 0 and Wo % S == 0:  # no clipped patches: whole rows of S pixels
            sch.unroll(y)
            sch.vectorize(x)
        return sch
    c, h, w = sch.get_loops(add)
    sch.parallel(sch.fuse(c, h))
    if S > 1 and Wo % S == 0:
        _, x = sch.split(w, [None, S])
        sch.vectorize(x)
    return sch


def schedule_cuda(func, **params) -> s_tir.Schedule:
    """Slot map one thread per patch (initialised, then set); the add one thread per output element (in place: per
    patch pixel)."""
    sch = s_tir.Schedule(func)
    if params.get("inplace"):
        bind_spatial_cuda(sch, sch.get_sblock("add"), 256)
        return sch
    bind_spatial_cuda(sch, sch.get_sblock("slot_init"), 64)
    bind_spatial_cuda(sch, sch.get_sblock("slot_set"), 64)
    bind_spatial_cuda(sch, sch.get_sblock("add"), 256)
    return sch
