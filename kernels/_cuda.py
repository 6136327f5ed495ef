"""CUDA schedules of the convolutions as implicit GEMMs (shared-memory block tiles, register tiles).

Every convolution kernel computes ``acc[M, N] = sum_K A[M, K] B[K, N]`` with ``M`` its output pixels (the active
patches' pixels ``P * S * S`` for the patch kernels, ``P`` symbolic), ``N`` the output channels and ``K`` the input
channels times the 3 x 3 taps. :func:`schedule_gemm_cuda` tiles the ``conv`` block that way:

- one CUDA block per ``bm x bn`` output tile (``blockIdx.y`` over ``M``, ``blockIdx.x`` over ``N``); the grid is
  sized by the ``M`` extent (patch kernels: from the patch-index buffer's length), so a block past the last
  active pixel has nothing to compute;
- each thread owns a ``tm x tn`` register tile (``acc`` in ``local`` scope), ``tm`` consecutive pixels by ``tn``
  output channels, and the epilogue (bias, ReLU, scatter-add) runs on that tile straight from registers;
- per step of ``kc`` input channels the block stages its A tile and its weight tile in shared memory, fetched
  cooperatively by all threads. The A-tile loader is either the kernel's own window block (the gather convs:
  the gather through the patch index table, and the zero border, happen while the tile is loaded, and only the
  block's patches' ``L x L`` windows of ``kc`` channels are staged), a ``cache_read`` of the input, or an
  im2col tile ``[bm, kc, taps]`` (``reindex`` of the conv's read, the zero padding of :mod:`.conv3x3` inlined
  into it).

Staged tiles and register tiles are indexed modulo their size (a tile always starts at a multiple of it), so
every buffer has a constant size whatever the symbolic patch count. Nothing here needs sm_80+ (no cp.async, no
tensor cores): the same schedules build for sm_53 ... sm_90.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir
from tvm.tirx import IndexMap

from .shapes import largest_divisor


@dataclass(frozen=True)
class GemmTile:
    """Block tile ``bm x bn`` outputs, register tile ``tm x tn`` per thread, ``kc`` input channels per K-step."""

    bm: int
    bn: int
    tm: int
    tn: int
    kc: int

    @property
    def threads(self) -> int:
        return (self.bm // self.tm) * (self.bn // self.tn)

    @property
    def outputs_per_thread(self) -> int:
        return self.tm * self.tn


def gemm_tile(M: int | None, N: int, K_channels: int, taps: int = 1, group_width: int | None = None) -> GemmTile:
    """Tile of an ``M x N`` implicit GEMM with ``K_channels * taps`` reduction steps per output.

    ``M`` is None when symbolic (patch kernels). ``group_width``: output channels per group of a grouped conv
    (a block tile never spans groups, so that its A tile holds one group's input channels).
    """
    n_limit = N if group_width is None else group_width
    bn = largest_divisor(n_limit, 64)
    tn = 4 if bn % 4 == 0 else largest_divisor(bn, 4)
    tm = 4 if tn >= 4 else 8 if tn == 2 else 16
    bm = 64 if bn >= 32 else 128 if bn >= 16 else 256
    if M is not None:  # small static maps: fewer idle threads
        while bm > 4 * tm and bm // 2 >= M:
            bm //= 2
    kc = largest_divisor(K_channels, 8 if taps > 1 else 16)
    return GemmTile(bm=bm, bn=bn, tm=tm, tn=tn, kc=kc)


def cooperative_fetch(sch: s_tir.Schedule, block, tile: GemmTile) -> None:
    """Spread the loops of a shared-memory loader ``block`` (already placed under the K-step loop) over the
    block's threads (``threadIdx.y`` x ``threadIdx.x`` as the GEMM binds them)."""
    loops = sch.get_loops(block)
    # the loader's own loops follow the GEMM's bound loops (blockIdx.y/x, threadIdx.y/x) and its K-step loop
    own = loops[5:]
    fused = sch.fuse(*own) if len(own) > 1 else own[0]
    ty, tx = tile.bm // tile.tm, tile.bn // tile.tn
    _, fy, fx = sch.split(fused, [None, ty, tx])
    sch.bind(fy, "threadIdx.y")
    sch.bind(fx, "threadIdx.x")


def _pick(f, dims):
    return lambda *v: f(*(v[d] for d in dims))


def as_gemm(sch: s_tir.Schedule, conv, epilogues: list, n_axis: int) -> None:
    """Rewrite ``conv`` and its ``epilogues`` as a GEMM: the accumulator (``conv``'s write, indexed by its
    spatial block variables in order, output channels at ``n_axis``) becomes ``[M, N]`` with the pixel axes
    fused in order, ``conv`` iterates ``(m, n, *reduction)`` and each epilogue ``(m, n)``. The register tile of
    a thread (``tm`` consecutive ``m``) is then a constant-indexed array, which stays in registers."""
    acc = sch.get(conv).writes[0].source
    root = sch.get(sch.get_sblock("root"))
    shape = next(list(buf.shape) for buf in root.alloc_buffers if buf.name == acc.name)
    m_axes = [a for a in range(len(shape)) if a != n_axis]

    def flat(*idx):
        m = idx[m_axes[0]]
        for a in m_axes[1:]:
            m = m * shape[a] + idx[a]
        return m, idx[n_axis]

    def acc_dims(block):  # position among the block's iter vars of each accumulator index
        blk = sch.get(block)
        names = [iv.var.name for iv in blk.iter_vars]
        region = next(r.region for r in (*blk.reads, *blk.writes) if r.source.name == acc.name)
        return [names.index(rng.min.name) for rng in region]

    conv_dims = acc_dims(conv)
    n_conv = len(sch.get(conv).iter_vars)
    reductions = [i for i in range(n_conv) if i not in conv_dims]
    epi_dims = [acc_dims(epi) for epi in epilogues]
    sch.transform_layout(conv, ("write", 0), IndexMap.from_func(flat, ndim=len(shape), index_dtype="int32"),
                         assume_injective_transform=True)
    sch.transform_block_layout(conv, IndexMap.from_func(
        lambda *v: (*flat(*(v[d] for d in conv_dims)), *(v[r] for r in reductions)), ndim=n_conv, index_dtype="int32"))
    for epi, dims in zip(epilogues, epi_dims):
        sch.transform_block_layout(epi, IndexMap.from_func(
            _pick(flat, dims), ndim=len(sch.get(epi).iter_vars), index_dtype="int32"))


def _read_index(sch: s_tir.Schedule, block, name: str) -> int:
    return [r.source.name for r in sch.get(block).reads].index(name)


def schedule_gemm_cuda(sch: s_tir.Schedule, conv, epilogues: list, n_axis: int, tile: GemmTile, a_loader=None,
                       a_read: str | None = None, b_read: str | None = None, patch_pixels: int = 0,
                       a_im2col: str | None = None, inline: list | None = None, group_width: int = 0) -> None:
    """Tile the ``conv`` block as an implicit GEMM (module docstring; layout from :func:`as_gemm`, ``n_axis``
    is the accumulator's output-channel axis).

    ``epilogues`` are the blocks that consume ``acc`` (computed on each thread's register tile). The reduction's
    first axis (input channels) is split in steps of ``tile.kc``. The A tile is staged by the block
    ``a_loader`` (computed in shared memory per K-step) or, without one, by a ``cache_read`` of the conv's
    input buffer named ``a_read``; the weights (buffer ``b_read``) by a ``cache_read``.

    ``a_im2col``: instead, the A tile is the conv's read of that buffer laid out ``[M, K...]`` (``reindex``: one
    row per output pixel, so a tile is ``bm`` rows whatever the map's width or stride); ``inline`` are the blocks
    that produce that buffer (e.g. the zero padding), computed inside this loader. ``group_width``: output
    channels per group of a grouped conv (the A tile then holds one group's input channels: a block tile never
    spans groups).

    ``patch_pixels``: pixels per patch (``S * S``) of a patch kernel, whose A tile is indexed by the (symbolic)
    patch number first: a block tile spans at most ``ceil((bm - 1) / S^2) + 1`` patches, so the staged tile is
    indexed by the patch number modulo that count and has a constant size.
    """
    as_gemm(sch, conv, epilogues, n_axis)
    if a_im2col is not None:  # before tiling: reindex needs the conv's own loop nest
        if group_width:  # iterate (m, group, channel in group, ...): the A tile is indexed by the group
            n_k = len(sch.get(conv).iter_vars) - 2
            sch.transform_block_layout(conv, IndexMap.from_func(
                lambda m, n, *k: (m, n // group_width, n % group_width, *k), ndim=n_k + 2, index_dtype="int32"))
        a_loader = sch.reindex(conv, ("read", _read_index(sch, conv, a_im2col)))
        for blk in inline or ():
            sch.compute_inline(blk)
        if group_width:
            m, grp, o, *k_loops = sch.get_loops(conv)
            sch.fuse(grp, o)
    m, n_loop, *k_loops = sch.get_loops(conv)
    # no predicate on the conv: pixels past M are computed from whatever the staged tiles hold and never stored
    # (the epilogue keeps its own bounds), so the staged tiles keep the block tile's constant size
    m_o, m_t, m_i = sch.split(m, [None, tile.bm // tile.tm, tile.tm], disable_predication=True)
    n_o, n_t, n_i = sch.split(n_loop, [None, tile.bn // tile.tn, tile.tn])
    k_o, k_i = sch.split(k_loops[0], [None, tile.kc])
    sch.reorder(m_o, n_o, m_t, n_t, k_o, k_i, *k_loops[1:], m_i, n_i)
    sch.bind(m_o, "blockIdx.y")
    sch.bind(n_o, "blockIdx.x")
    sch.bind(m_t, "threadIdx.y")
    sch.bind(n_t, "threadIdx.x")
    sch.set_scope(conv, 0, "local")
    for epi in epilogues:
        sch.reverse_compute_at(epi, n_t)
    if b_read is not None:
        wb = sch.cache_read(conv, _read_index(sch, conv, b_read), "shared", consumer_blocks=[conv])
        sch.compute_at(wb, k_o)
        cooperative_fetch(sch, wb, tile)
    span = 0  # rows of the staged A tile's first axis (indexed modulo span), 0: leave as compacted
    if a_loader is None and a_read is not None:
        a_loader = sch.cache_read(conv, _read_index(sch, conv, a_read), "shared", consumer_blocks=[conv])
        sch.compute_at(a_loader, k_o)
    elif a_loader is not None:  # scope first: compute_at then stages the whole block's tile, not one thread's
        sch.set_scope(a_loader, 0, "shared")
        sch.compute_at(a_loader, k_o)
    if a_loader is not None:
        if a_im2col is not None:
            span = tile.bm
            if group_width:  # [m, group, ...]: one group per block tile
                ndim = len(sch.get(a_loader).writes[0].region)
                sch.transform_layout(a_loader, ("write", 0), IndexMap.from_func(
                    lambda p, grp, *rest: (p, *rest), ndim=ndim, index_dtype="int32"),
                    assume_injective_transform=True)
        elif patch_pixels:
            span = -(-(tile.bm - 1) // patch_pixels) + 1
        if span:
            ndim = len(sch.get(a_loader).writes[0].region)
            sch.transform_layout(a_loader, ("write", 0), IndexMap.from_func(
                lambda p, *rest: (p % span, *rest), ndim=ndim, index_dtype="int32"), assume_injective_transform=True)
        cooperative_fetch(sch, a_loader, tile)
    for lp in (m_i, n_i):
        sch.unroll(lp)
    sch.decompose_reduction(conv, k_o)
    # A thread's register tile starts at multiples of tm and tn: index it modulo them, a constant-size array
    # whatever the symbolic pixel count. (Modulo maps are not injective: applied only once every block that
    # touches the buffer is in place, each thread reading back only its own tile.)
    sch.transform_layout(conv, ("write", 0), IndexMap.from_func(lambda i, j: (i % tile.tm, j % tile.tn),
                                                                index_dtype="int32"), assume_injective_transform=True)
