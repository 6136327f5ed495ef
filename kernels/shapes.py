"""Extents, register tiles and weight layouts of the kernels, in plain Python and numpy (no TVM).

The kernels' builders and default schedules take their extents and tiles from here, and so do the block plan
(buffer shapes, packed weights) and the latency predictor (how many patches a kernel really computes, which
CPU schedule a patch conv gets), so that they cannot disagree. Importing this module does not import TVM.
"""

from __future__ import annotations

import numpy as np

#: Floats of one register tile: TVM keeps a CPU allocation under 1 KiB on the stack (and LLVM in registers);
#: larger ones go through TVMBackendAllocWorkspace and the accumulators through memory.
MAX_TILE_FLOATS = 240
#: Weights (bytes) above which the patch conv walks all patches per weight tile (measured on a 2-core Zen 3
#: with 512 KiB L2 per core: better for LAS-ResNet stage 4, 9 MiB; worse for stage 3, 2.3 MiB).
LARGE_WEIGHT_BYTES = 4 * 1024 * 1024
#: Weight tile (bytes) that stays in a core's L2 while all patches use it (large weights only).
WEIGHT_TILE_BYTES = 128 * 1024


def ceil_div(a, b):
    """``ceil(a / b)`` for non-negative ``a`` (an int or a symbolic TIR extent) and positive ``b``."""
    return (a + b - 1) // b


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


# ---------------------------------------------------------------- patch convolutions
def patch_block(S: int) -> int:
    """Patches per register tile of the padded gather-conv and the patch conv1x1: 6 for S = 1, 3 for S = 2,
    else 1."""
    return {1: 6, 2: 3}.get(S, 1)


def computed_patches(P, S: int):
    """Patches the padded gather-conv and the patch conv1x1 compute for ``P`` active ones: ``P`` rounded up to
    whole :func:`patch_block` s (the last block repeats the last active patch and writes nothing). ``P`` may
    be a symbolic TIR extent."""
    pb = patch_block(S)
    return ceil_div(P, pb) * pb


def patch_tile(S: int) -> tuple[int, int, int]:
    """Register tile ``(patches, rows, columns)`` of a patch conv.

    S = 1: 6 pixels (so with 32 channels: 2 weight vectors and 6 broadcasts per 12 FMAs, and at most 5 patches
    computed in vain); S = 2, 3: 12 and 9 pixels (whole patches); larger S: one patch row of up to 8 columns.
    Measured on LAS-ResNet-50's shapes (AVX-512, 2 cores): 10-20 % faster than 12-pixel tiles for S = 1, 4.
    """
    if S <= 3:
        return patch_block(S), S, S
    return 1, 1, (S if S <= 8 else largest_divisor(S, 8))


def patch_tiles(C: int, S: int, groups: int) -> tuple[int, int]:
    """Register tile ``(columns, channels)`` of a window conv: about 8 AVX2 accumulators whatever S is.

    Columns of the patch (at most 4) times output channels (a multiple of 8): ``4 x 16`` for S = 4,
    ``2 x 32`` for S = 2, ``1 x 64`` for S = 1, so that small patches still keep enough independent FMA
    chains in flight.
    """
    tx = largest_divisor(S, 4)
    return tx, co_tile(C, groups, max(16, 64 // tx))


def large_weights_3x3(C: int, groups: int = 1) -> bool:
    """Whether the 3x3 weights ``[C / groups, 3, 3, C]`` exceed :data:`LARGE_WEIGHT_BYTES`: the window conv's
    CPU schedule then runs channel tiles in parallel, all patches per weight tile, instead of one task per
    patch."""
    return C // groups * 9 * C * 4 > LARGE_WEIGHT_BYTES


# ---------------------------------------------------------------- packed weights
def co_block(C_out: int) -> int:
    """Output-channel block of the packed 1x1 weights: 32, 16 or 8 if it divides ``C_out``, else ``C_out``."""
    for cb in (32, 16, 8):
        if C_out % cb == 0:
            return cb
    return C_out


def pack_weight_1x1(w: np.ndarray) -> np.ndarray:
    """1x1 weights ``[C_out, C_in]`` -> ``[C_out // cb, C_in, cb]`` (float32, contiguous), ``cb = co_block(C_out)``."""
    C_out, C_in = w.shape
    cb = co_block(C_out)
    return np.ascontiguousarray(np.asarray(w, dtype=np.float32).reshape(C_out // cb, cb, C_in).transpose(0, 2, 1))


def weight_block(C: int, groups: int) -> int:
    """Output channels per block of the packed 3x3 weights: a multiple of 8 up to 32 dividing the group width."""
    return co_tile(C, groups, 32)


def pack_weight_3x3(w2: np.ndarray, groups: int = 1) -> np.ndarray:
    """3x3 weights ``[C, C // groups, 3, 3]`` -> ``[C // wb, C // groups, 3, 3, wb]`` (float32, contiguous),
    ``wb = weight_block(C, groups)``."""
    C = w2.shape[0]
    wb = weight_block(C, groups)
    blocks = np.asarray(w2, dtype=np.float32).reshape(C // wb, wb, *w2.shape[1:])
    return np.ascontiguousarray(blocks.transpose(0, 2, 3, 4, 1))
