"""Mask compaction shared by the maskers: the row-major list of active patch indices and their count.

The ``G`` patches are cut into ``NT ~ sqrt(G)`` chunks of ``K`` consecutive patches. Chunk ``t`` counts its
active patches (``chunk_count``), then (``compact``) sums the counts of the chunks before it to get its first
output slot and writes its active indices from there; the last chunk writes the total to ``count``. The CPU
runs it serially (``G + NT^2 / 2 + G`` steps); on CUDA each loop over chunks is one thread block (one thread
per chunk), with no host involvement.
"""

from __future__ import annotations

import math

from tvm import s_tir
from tvm.script import tirx as T


def chunking(G: int) -> tuple[int, int]:
    """``(NT, K)``: number of chunks and patches per chunk for ``G`` patches (``NT * K >= G``)."""
    nt = math.isqrt(G - 1) + 1 if G > 1 else 1  # ceil(sqrt(G))
    return nt, -(-G // nt)


def compaction(G: int):
    """A TVMScript macro ``compact(mask, idx, count, csum)`` for ``mask/idx [G]``, ``count [1]`` and a scratch
    buffer ``csum [NT]`` (:func:`chunking`) that the caller allocates at its root."""
    NT, K = chunking(G)

    @T.macro
    def compact(mask, idx, count, csum):
        with T.sblock("compaction"):  # its own scope: the compaction reads every chunk count
            T.reads(mask[0:G])
            T.writes(idx[0:G], count[0:1], csum[0:NT])
            for t, j in T.grid(NT, K):
                with T.sblock("chunk_count"):
                    vt, vj = T.axis.remap("SR", [t, j])
                    T.reads(mask[T.min(vt * K + vj, G - 1)])
                    T.writes(csum[vt])
                    with T.init():
                        csum[vt] = 0
                    csum[vt] = csum[vt] + T.if_then_else(vt * K + vj < G, mask[T.min(vt * K + vj, G - 1)], 0)
            for t in range(NT):
                with T.sblock("compact"):
                    vt = T.axis.spatial(NT, t)
                    T.reads(mask[0:G], csum[0:NT])
                    T.writes(idx[0:G], count[0:1])
                    cur = T.sblock_alloc_buffer((1,), "int32", scope="local")
                    cur[0] = 0
                    for u in range(vt):
                        cur[0] = cur[0] + csum[u]
                    for j in range(K):
                        if vt * K + j < G:
                            if mask[vt * K + j] != 0:
                                idx[cur[0]] = vt * K + j
                                cur[0] = cur[0] + 1
                    if vt == NT - 1:
                        count[0] = cur[0]

    return compact


def schedule_compaction_cuda(sch: s_tir.Schedule) -> None:
    """Two kernels of one thread block each, one thread per chunk: the chunk counts, then the compaction.

    Two launches rather than one kernel with the counts in shared memory: no barrier, which TVM's NVPTX backend
    (old archs) cannot emit."""
    for name in ("chunk_count", "compact"):
        bx, tx = sch.split(sch.get_loops(sch.get_sblock(name))[0], [1, None])
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
