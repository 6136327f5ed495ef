"""Helpers shared by the kernel modules: tile-size choice, schedule idioms and search-space declarations.

Every kernel module defines a PrimFunc builder (shape parameters in, ``tvm.tirx.PrimFunc`` out, float32),
``schedule_cpu(func, **params)`` and ``schedule_cuda(func, **params)`` returning a ``tvm.s_tir.Schedule`` with
the default schedule applied, and ``SEARCH_SPACE``, a :class:`SearchSpace` for MetaSchedule tuning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tvm import s_tir

VEC = 8  # float32 lanes of one AVX2 / two NEON registers


def largest_divisor(n: int, cap: int) -> int:
    """Largest divisor of ``n`` that is at most ``cap`` (at least 1)."""
    for d in range(min(n, max(cap, 1)), 0, -1):
        if n % d == 0:
            return d
    return 1


def vec_width(n: int, cap: int = 16) -> int:
    """Vector tile for a contiguous axis of length ``n``: a multiple of 8 dividing ``n``, else ``n`` if short."""
    for v in (16, 8):
        if v <= cap and n % v == 0:
            return v
    if n <= 2 * cap:
        return n
    return largest_divisor(n, cap)


def co_tile(C: int, groups: int, cap: int = 16) -> int:
    """Output-channel vector tile: divides the channels per group so that every lane reads one input channel.

    The largest multiple of 8 (one AVX2 register) dividing ``C // groups`` and at most ``cap``; else the
    largest divisor at most 16.
    """
    opg = C // groups
    for t in range(cap - cap % 8, 7, -8):
        if opg % t == 0:
            return t
    return largest_divisor(opg, 16)


def lane_tile(block: int, cap: int) -> int:
    """Vector tile over a packed channel block of ``block`` lanes: the block itself if it fits ``cap``, else
    its largest divisor up to ``cap`` (so that a tile never spans two blocks)."""
    return block if block <= cap else largest_divisor(block, cap)


#: Floats of one register tile: TVM keeps a CPU allocation under 1 KiB on the stack (and LLVM in registers);
#: larger ones go through TVMBackendAllocWorkspace and the accumulators through memory.
MAX_TILE_FLOATS = 240


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


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def padded_extent(H: int, S: int, stride: int) -> int:
    """Side of a conv1 map stored with a zero border: 1 pixel top/left, enough bottom/right for every window.

    Every patch window of :func:`lasnet_tvm.models.folded.gather_patches` then lies inside the buffer.
    """
    Ho = ceil_div(H, stride)
    g = ceil_div(Ho, S)
    return max(H + 2, (g * S - 1) * stride + 3)


def dense_padded_extent(H: int, stride: int) -> int:
    """Side of a zero-bordered map that a dense 3x3 conv (stride) reads without bounds checks."""
    return max(H + 2, (ceil_div(H, stride) - 1) * stride + 3)


def bind_spatial_cuda(sch: s_tir.Schedule, block, threads: int = 128) -> None:
    """Fuse all loops of a spatial block and bind them to ``blockIdx.x`` / ``threadIdx.x``."""
    loops = sch.get_loops(block)
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    bx, tx = sch.split(fused, [None, threads])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")


@dataclass(frozen=True)
class SearchSpace:
    """Declaration of a kernel's MetaSchedule search space (consumed by ``lasnet-tvm tune``).

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
