"""Schedule idioms shared by the kernel modules (their extents and tile sizes: :mod:`.shapes`).

Every kernel module defines a PrimFunc builder (shape parameters in, ``tvm.tirx.PrimFunc`` out, float32),
``schedule_cpu(func, **params)`` and ``schedule_cuda(func, **params)`` returning a ``tvm.s_tir.Schedule`` with
the default schedule applied.
"""

from __future__ import annotations

from tvm import s_tir


def order_channel_tiles(sch: s_tir.Schedule, conv, epilogue, co_o, co_i, outer: list, reduction: list,
                        inner: list) -> None:
    """Finish a register-tiled conv whose loops are split: output-channel tiles ``co_o`` (``co_i`` vectorized),
    spatial tiles ``outer`` (``inner`` unrolled) and ``reduction``.

    Channel tiles go outermost and in parallel when there are at least 8 of them, so that a thread's weight tile
    stays in its cache while it walks the spatial tiles; else the first spatial tile loop runs in parallel.
    ``epilogue`` is computed per spatial tile; the accumulator is initialised at the reduction.
    """
    if int(sch.get(co_o).extent) >= 8:
        sch.reorder(co_o, *outer, *reduction, *inner, co_i)
        sch.parallel(co_o)
    else:
        sch.reorder(outer[0], co_o, *outer[1:], *reduction, *inner, co_i)
        sch.parallel(outer[0])
    sch.reverse_compute_at(epilogue, outer[-1])
    for loop in inner:
        sch.unroll(loop)
    sch.vectorize(co_i)
    sch.decompose_reduction(conv, reduction[0])


def bind_spatial_cuda(sch: s_tir.Schedule, block, threads: int = 128) -> None:
    """Fuse all loops of a spatial block and bind them to ``blockIdx.x`` / ``threadIdx.x``."""
    loops = sch.get_loops(block)
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    bx, tx = sch.split(fused, [None, threads])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
