"""The 1x1 conv as a GEMM on CPU: packed weight layout and the two register-tiled schedules.

Dense 1x1 convs (:mod:`conv1x1`, and conv1 inside :mod:`masker_conv1x1`) take their weights packed as
``[C_out // cb, C_in, cb]`` (:func:`.shapes.pack_weight_1x1`, ``cb`` = :func:`.shapes.co_block`), so that a
tile of ``cb`` output channels reads one contiguous, sequential stream of weights. The kernels declare the
weight as that buffer and index it ``w[co // cb, k, co % cb]``.

:func:`schedule_conv1x1_cpu` picks, per shape:

- *channel-vector* tiles (:func:`schedule_channel_vector`): ``cb`` output channels in 1-2 vectors x a few
  pixels, each pixel's input broadcast. Any width and stride; used for maps up to 32 x 32 and strided convs
  (LAS-ResNet-50 stages 2-4, downsample branches: 1.5-4x over the row schedule on an AVX-512 CPU);
- *row-vector* tiles (:func:`schedule_row_vector`): a few channels x 2-3 rows x 8 columns with the input tile
  packed per pixel tile; faster for the large stride-1 maps (56 x 56). Measured on an AVX-512 CPU (one thread,
  2026-12-03): 1.0-1.7x over channel-vector tiles over an input packed per row block for LAS-ResNet-50's
  stage-1 convs (64 -> 256 channels 1.7x, 256 -> 64 1.3x, 256 -> 128 1.1x).
"""

from __future__ import annotations

from tvm import s_tir

from .shapes import MAX_TILE_FLOATS, ceil_div, co_block, largest_divisor, vec_width

#: Largest map (output pixels) for which stride-1 convs use the channel-vector schedule.
CHANNEL_VECTOR_MAX_PIXELS = 1024
#: Vector accumulators of one channel-vector register tile (AVX-512 has 32 registers).
MAX_ACCUMULATORS = 24


def schedule_conv1x1_cpu(sch: s_tir.Schedule, conv, epi, C: int, H: int, W: int, stride: int = 1):
    """Schedule a ``[C, H, W]`` (output) 1x1 conv block with its epilogue ``epi``; see the module docstring."""
    if co_block(C) % 8 == 0 and (H * W <= CHANNEL_VECTOR_MAX_PIXELS or stride > 1):
        schedule_channel_vector(sch, conv, epi, C, H, W)
    else:
        schedule_row_vector(sch, conv, epi, C, H, W)


def schedule_channel_vector(sch: s_tir.Schedule, conv, epi, C: int, H: int, W: int) -> None:
    """``cb`` channels (vectorized) x ``ti`` rows x ``tj`` columns per register tile, weights streamed per channel
    block; parallel over channel blocks (and row blocks of large maps). The accumulator is laid out
    ``[C // cb, H, W, cb]`` so that the tile's vectors are contiguous."""
    cb, ti, tj = _channel_tile(C, H, W)
    sch.transform_layout(conv, ("write", 0), lambda co, i, j: (co // cb, i, j, co % cb))
    co, i, j, k = sch.get_loops(conv)
    co_o, co_i = sch.split(co, [None, cb])
    rows = H // ti
    rb = next(d for d in range(1, rows + 1) if rows % d == 0 and (H // d) * W <= CHANNEL_VECTOR_MAX_PIXELS)
    i_oo, i_oi, i_i = sch.split(i, [rb, None, ti])
    j_o, j_i = sch.split(j, [None, tj])
    sch.reorder(i_oo, co_o, i_oi, j_o, k, i_i, j_i, co_i)
    sch.reverse_compute_at(epi, j_o)
    sch.parallel(sch.fuse(i_oo, co_o))
    sch.unroll(i_i)
    sch.unroll(j_i)
    sch.vectorize(co_i)
    sch.decompose_reduction(conv, k)


def _channel_tile(C: int, H: int, W: int) -> tuple[int, int, int]:
    """``(cb, ti, tj)``: channels (the packed weight block) x rows x columns of a channel-vector register tile."""
    cb = co_block(C)
    per = max(1, min(MAX_ACCUMULATORS // max(1, cb // 16), MAX_TILE_FLOATS // cb))  # pixels per tile
    tj = largest_divisor(W, per)
    return cb, largest_divisor(H, max(1, per // tj)), tj


def schedule_row_vector(sch: s_tir.Schedule, conv, epi, C: int, H: int, W: int) -> None:
    """``tc`` channels x ``ti`` rows x ``tj`` columns (vectorized) per register tile, the input tile
    ``[C_in, ti, tj]`` packed once per pixel tile; parallel over pixel tiles."""
    co, i, j, k = sch.get_loops(conv)
    tj = vec_width(W, 8)
    if tj > 8:  # e.g. W = 14: two ragged vectors per row are slower (7.6 GFLOP/s) than 7 lanes (~45)
        tj = largest_divisor(W, 8)
    # 4 (or 5) channels x 2-3 rows x 8 columns: 8-12 vector accumulators, measured best on a 2-core Zen 3
    tc = 4 if C % 4 == 0 else 5 if C % 5 == 0 else largest_divisor(C, 8)
    if tc < 4:
        tc = min(C, 4)  # ragged last tile, predicated
    per_row = tc * ceil_div(tj, 8)  # vector accumulators per output row
    ti = 3 if per_row * 3 <= 12 and H % 3 == 0 else 2 if H >= 2 else 1
    co_o, co_i = sch.split(co, [None, tc])
    i_o, i_i = sch.split(i, [None, ti])
    j_o, j_i = sch.split(j, [None, tj])
    sch.reorder(i_o, j_o, co_o, k, co_i, i_i, j_i)
    sch.reverse_compute_at(epi, co_o)  # accumulator tile: small "global" alloc -> stack -> registers
    par = sch.fuse(i_o, j_o)
    sch.parallel(par)
    # pack the input tile [C_in, ti, tj] contiguously once per pixel tile: the GEMM then walks one small
    # buffer instead of C_in pages of x for every channel tile (fewer TLB/cache misses)
    xl = sch.cache_read(conv, 1, "global", consumer_blocks=[conv])
    sch.compute_at(xl, par)
    sch.vectorize(sch.get_loops(xl)[-1])
    sch.unroll(co_i)
    sch.unroll(i_i)
    sch.vectorize(j_i)
    sch.vectorize(sch.get_loops(epi)[-1])
    sch.decompose_reduction(conv, k)
