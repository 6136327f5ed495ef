"""Schedule idioms shared by the kernel modules (their extents and tile sizes: :mod:`.shapes`) and search-space
declarations.

Every kernel module defines a PrimFunc builder (shape parameters in, ``tvm.tirx.PrimFunc`` out, float32),
``schedule_cpu(func, **params)`` and ``schedule_cuda(func, **params)`` returning a ``tvm.s_tir.Schedule`` with
the default schedule applied, and ``SEARCH_SPACE``, a :class:`SearchSpace` for the MetaSchedule tuning issue.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class SearchSpace:
    """Declaration of a kernel's MetaSchedule search space (consumed by the tuning issue).

    Attributes
    ----------
    rules : str
        ``"default"``: MetaSchedule's default schedule rules for the target kind (``PostOrderApply``).
    specialize : dict
        Symbolic extents to pin before tuning (MetaSchedule cannot tune a symbolic parallel loop) with the
        representative value as a fraction of their maximum (e.g. ``{"P": 0.5}`` = half the patches).
    index_args : tuple of str
        Int32 arguments holding patch indices: the runner must fill them with valid indices.
    """

    rules: str = "default"
    specialize: dict = field(default_factory=dict)
    index_args: tuple = ()

    def generator(self):
        """The ``ms.space_generator.PostOrderApply`` to tune with."""
        from tvm.s_tir import meta_schedule as ms

        return ms.space_generator.PostOrderApply(sch_rules="from-target", postprocs="from-target",
                                                 mutator_probs="from-target")
