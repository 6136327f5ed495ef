"""Per-operator latency model (paper Appendix A) with a vectorized tile search.

Every operator (static conv 1x1/3x3/strided/grouped, masker, gather, gather-conv3x3, conv on patches, scatter,
add, scatter-add, SE pooling and FCs, pooling, fc) is described by one :class:`Op`: its output tile space
``(P, C, H, W)`` (``P`` = batch for a static op, batch x active patches for a dynamic one), the reduction it does
per output element, the shape and memory layout of what it reads and writes. The latency of an op is

``launch + dram + onchip + compute`` (the paper adds data movement and computation; no overlap is assumed)

evaluated for every tile ``T_P x T_C x T_S1 x T_S2`` (per dimension: the powers of two below the extent and the
extent itself, so that a latency never rises when an extent shrinks) and minimized over tiles:

* ``dram``: unique input, weight and output bytes moved once between off-chip and on-chip global memory at
  ``dram_gbps * efficiency.dram * e(run)``, where ``e(b) = b / (b + dram_half_bytes)`` for contiguous runs of ``b``
  bytes. Layout is NCHW (TVM's default): a patch window is read in rows of ``L * 4`` bytes, a patch written in
  rows of ``S * 4`` bytes, so small S means short runs and low efficiency.
* ``onchip``: each tile's input (with halo and, for a grouped conv, only its groups), weights, extra operands
  and output move once between global and PE-local memory; the same input is re-read by every tile of other
  channels, and overlapping halos are re-read by neighbouring tiles. Time = max(aggregate bytes at
  ``onchip_gbps * efficiency.onchip``, per-PE bytes of the busiest PE at ``pe_bytes_per_cycle * clock``), each
  byte weighted by ``1 / e(run)`` with ``onchip_half_bytes``.
* ``compute``: a PE works on ``lanes`` output elements at a time, one FMA (or add) per lane and cycle, at
  ``efficiency.compute``; tiles go to PEs in waves of ``pes`` (a ``serial`` op: one PE, one lane, on a CPU).
* ``launch``: ``efficiency.call_us`` per kernel call (``Op.calls``) and ``efficiency.launch_us`` per launch: a
  CPU kernel launches one parallel region per parallel loop nest, a GPU kernel one grid per stage
  (``Op.launches``). Ops that are parts of one compiled kernel (the stages of SE, a fused epilogue) carry that
  kernel's call and launches between them. An op with no work (no active patches) launches nothing: it costs
  its calls only.

Cache residency of the working set (``RESIDENT_SHARE`` of a memory): when the input row band of a tile (its
channels x its input rows x the row width of a densely read map) fits in PE-local memory, the tiles along a row
share it, so a tile reads its unique columns only, in runs of whole rows; when a tile reads windows out of a
larger map (gather-conv) and the map's planes of its channels fit, it reads its own pixels only (the halo is a
neighbour's), in runs of whole planes. A grouped 3x3 conv reads its few channels once, as lines, not as
``(T_W - 1) * stride + 3``-float runs. Off-chip, windows out of a map that fits in the on-chip global memory
cost at most the map read once (``Op.in_map_bytes``).

An output tile must fit in PE-local memory (``local_kb``). Results are cached per (op, profile).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from .profiles import HardwareProfile

F32 = 4  # bytes per element


@dataclass(frozen=True)
class Op:
    """One kernel.

    Attributes
    ----------
    name, kind : str
        Name in the block (``conv1``) and operator kind (``conv1x1``, ``gather_conv3x3``, ...).
    P, C, H, W : int
        Output extents (tile space).
    lane_ops : float
        FMAs (or adds) per output element.
    cin, cin_pg, cout_pg : int
        Input channels; input channels per group and output channels per group (``in_ch(T_C) =
        min(cin, ceil(T_C / cout_pg) * cin_pg)``; channel-wise ops use 1, 1).
    k, stride : int
        Input rows per output row: ``(T_S - 1) * stride + k``, capped at ``in_h``.
    in_h, in_w : int
        Input extents per input item.
    item_fan : int
        Input items per output item (e.g. SE pooling: patches per image).
    in_map_w : int
        Row width of the tensor the input is read from; a window narrower than it is read in separate rows.
    out_map_w : int
        Row width of the tensor the output is written into (scatter); 0: the output is its own dense tensor.
    weights : int
        Weight elements per output channel (0: none).
    extra : float
        Extra operands read with the output's shape and layout (identity of an add); a fraction for an operand
        that covers only part of the output (the patches of a dense scatter-add).
    dram_in, dram_out, dram_extra : float
        Unique bytes moved off-chip (input, output, extra operands); weights are added from ``weights``.
    dram_in_run, dram_out_run : float
        Contiguous run of those off-chip accesses, bytes.
    flops : float
        FLOPs of the op (reporting only; 2 per MAC).
    max_tile_p : int
        Largest tile extent along ``P`` that the kernel's default schedule uses (0: any). The toolkit's patch
        convolutions give each patch its own task (``1``), so each patch reads the whole weight tensor. Applied
        only for profiles with ``schedule: default``; ``search`` (the paper's model, tuned kernels) searches
        every tile.
    in_map_bytes : float
        Bytes of the whole map that windows are read from (0: none). When it fits in the on-chip global
        memory, the input's off-chip traffic is at most this map read once as whole channel planes.
    serial : bool
        On a CPU the op runs on one core, one lane (a scalar reduction loop outside any parallel region, as
        SE's FCs).
    launches : tuple of (float, float)
        Parallel regions launched on a CPU and kernel grids launched on a GPU by this op (0 for a stage that
        runs inside another op's region, e.g. a fused epilogue or SE's serial FCs).
    calls : int
        Kernel calls this op starts (1; 0 for every op of a compiled kernel but its first).
    """

    name: str
    kind: str
    P: int
    C: int
    H: int
    W: int
    lane_ops: float
    cin: int
    cin_pg: int
    cout_pg: int
    k: int
    stride: int
    in_h: int
    in_w: int
    item_fan: int = 1
    in_map_w: int = 0
    out_map_w: int = 0
    weights: int = 0
    extra: float = 0
    dram_in: float = 0.0
    dram_out: float = 0.0
    dram_extra: float = 0.0
    dram_in_run: float = 1e12
    dram_out_run: float = 1e12
    flops: float = 0.0
    max_tile_p: int = 0
    in_map_bytes: float = 0.0
    serial: bool = False
    launches: tuple = (1.0, 1.0)
    calls: int = 1


#: Share of PE-local memory that a tile's input row band may fill to stay resident between tiles.
RESIDENT_SHARE = 0.5


@dataclass(frozen=True)
class OpLatency:
    """Predicted latency of one op (seconds) and its parts."""

    name: str
    kind: str
    total: float
    dram: float
    onchip: float
    compute: float
    launch: float
    tile: tuple[int, int, int, int]
    flops: float

    @property
    def memory(self) -> float:
        return self.dram + self.onchip

    @property
    def dominant(self) -> str:
        return "memory" if self.memory >= self.compute else "compute"


def _candidates(n: int) -> np.ndarray:
    """Tile sizes of one dimension: powers of two below ``n`` and ``n`` itself."""
    c = [1 << i for i in range(max(0, math.ceil(math.log2(n))) if n > 1 else 0) if (1 << i) < n]
    return np.array(c + [n], dtype=np.float64)


@dataclass(frozen=True)
class _Terms:
    """The efficiency-independent parts of an op's cost on a device, per candidate tile (arrays) and off-chip.

    On-chip bytes of a tile weighted by ``1 / e(run)`` are ``tile_bytes + onchip_half_bytes * tile_runs``;
    off-chip bytes are ``dram_bytes + dram_half_bytes * dram_runs``, of which the input's are ``dram_in_bytes +
    dram_half_bytes * dram_in_runs``.
    """

    n_tiles: np.ndarray
    waves: np.ndarray
    cycles: np.ndarray
    tile_bytes: np.ndarray
    tile_runs: np.ndarray
    fits: np.ndarray
    tiles: tuple
    dram_bytes: float
    dram_runs: float
    dram_in_bytes: float
    dram_in_runs: float


@functools.lru_cache(maxsize=65536)
def _terms(op: Op, pes: int, lanes: int, local_kb: float, persistent: bool, max_tile_p: int) -> _Terms:
    tp = _candidates(op.P)
    tp = (tp[tp <= max_tile_p] if max_tile_p else tp)[:, None, None, None]
    tc = _candidates(op.C)[None, :, None, None]
    th = _candidates(op.H)[None, None, :, None]
    tw = _candidates(op.W)[None, None, None, :]
    n_tiles = np.ceil(op.P / tp) * np.ceil(op.C / tc) * np.ceil(op.H / th) * np.ceil(op.W / tw)
    waves = np.ceil(n_tiles / pes)
    t_out = tp * tc * th * tw
    cycles = np.ceil(t_out / lanes) * op.lane_ops  # lanes work on output elements, one lane-op per cycle
    in_ch = np.minimum(op.cin, np.ceil(tc / op.cout_pg) * op.cin_pg)
    rows = np.minimum(op.in_h, (th - 1) * op.stride + op.k)
    cols = np.minimum(op.in_w, (tw - 1) * op.stride + op.k)
    map_w = op.in_map_w or op.in_w
    in_run = np.where(cols >= map_w, rows * cols, cols) * F32
    in_bytes = tp * op.item_fan * in_ch * rows * cols * F32
    local = local_kb * 1024 * RESIDENT_SHARE
    if op.in_map_w > op.in_w:  # windows out of a larger map: resident channel planes are read once, whole
        resident = op.item_fan * in_ch * op.in_map_w * op.in_map_w * F32 <= local
        own = np.minimum(rows, th * op.stride) * np.minimum(cols, tw * op.stride)  # the halo is a neighbour's
        in_bytes = np.where(resident, tp * op.item_fan * in_ch * own * F32, in_bytes)
        in_run = np.where(resident, op.in_map_w * op.in_map_w * F32, in_run)
    else:  # a dense map: resident row bands are read once, as whole rows
        resident = tp * op.item_fan * in_ch * rows * op.in_w * F32 <= local
        unique = tp * op.item_fan * in_ch * rows * np.minimum(cols, tw * op.stride) * F32
        in_bytes = np.where(resident, unique, in_bytes)
        in_run = np.where(resident, rows * op.in_w * F32, in_run)
    w_bytes = tc * op.weights * F32
    w_all = op.C * op.weights * F32
    if persistent and 0 < w_all <= local_kb * 1024 / 2:  # weights stay in local memory: loaded once per PE
        w_bytes = np.minimum(w_bytes, w_all / waves)
    out_map = op.out_map_w or op.W
    out_run = np.where(tw >= out_map, th * tw, tw) * F32
    out_bytes = t_out * F32 * (1 + op.extra)
    # b / e(run) = b + half * b / run
    tile_bytes = in_bytes + w_bytes + out_bytes
    tile_runs = in_bytes / in_run + w_bytes / np.maximum(w_bytes, F32) + out_bytes / out_run
    fits = t_out * F32 <= local_kb * 1024  # an output tile must fit in local memory
    dram_bytes = op.dram_in + op.C * op.weights * F32 + op.dram_out + op.dram_extra
    dram_runs = op.dram_in / op.dram_in_run + (op.dram_out + op.dram_extra) / op.dram_out_run
    return _Terms(n_tiles, waves, cycles, tile_bytes, tile_runs, fits, (tp, tc, th, tw), dram_bytes, dram_runs,
                  op.dram_in, op.dram_in / op.dram_in_run)


@functools.lru_cache(maxsize=65536)
def op_latency(op: Op, hw: HardwareProfile) -> OpLatency:
    """Predicted latency of ``op`` on ``hw``: the best tile of the search space (see the module docstring)."""
    e = hw.efficiency
    if op.P == 0 or op.C == 0:  # no work: the kernel is called and returns
        call = op.calls * e.call_us * 1e-6
        return OpLatency(op.name, op.kind, call, 0.0, 0.0, 0.0, call, (0, 0, 0, 0), 0.0)
    launch = (op.calls * e.call_us + op.launches[hw.kind == "gpu"] * e.launch_us) * 1e-6
    cpu = hw.kind == "cpu"
    pes, lanes = (1, 1) if (op.serial and cpu) else (hw.pes, hw.lanes)
    t = _terms(op, pes, lanes, hw.local_kb, cpu, op.max_tile_p if hw.schedule == "default" else 0)
    clock = hw.clock_mhz * 1e6
    compute = t.waves * t.cycles / (clock * e.compute)
    tile_cost = t.tile_bytes + e.onchip_half_bytes * t.tile_runs
    aggregate = t.n_tiles * tile_cost / (hw.onchip_gbps * 1e9 * e.onchip)
    per_pe = t.waves * tile_cost / (hw.pe_bytes_per_cycle * clock)
    onchip = np.maximum(aggregate, per_pe)
    total = np.where(t.fits, compute + onchip, np.inf)
    i = np.unravel_index(int(np.argmin(total)), total.shape)
    if not np.isfinite(total[i]):  # nothing fits (huge local tiles only): fall back to the smallest tile
        i = (0, 0, 0, 0)
    half = e.dram_half_bytes
    moved = t.dram_bytes + half * t.dram_runs
    if 0 < op.in_map_bytes <= hw.l2_kb * 1024 * RESIDENT_SHARE:  # each line of a cached map is fetched once
        whole = op.in_map_bytes * (1.0 + half / (op.in_map_w * op.in_map_w * F32))
        moved -= max(0.0, t.dram_in_bytes + half * t.dram_in_runs - whole)
    dram = moved / (hw.dram_gbps * 1e9 * e.dram)
    tile = tuple(int(a.flat[k]) for a, k in zip(t.tiles, i))
    c, o = float(compute[i]), float(onchip[i])
    scale = hw.kernel_scale_of(op.kind)
    if scale != 1.0:
        dram, c, o = dram * scale, c * scale, o * scale
    return OpLatency(op.name, op.kind, launch + dram + o + c, dram, o, c, launch, tile, op.flops)


# ----------------------------------------------------------------------------------------------------------
# Operator builders. ``B`` is the batch, ``P`` the number of active patches over the batch.


def conv(name: str, B: int, cin: int, cout: int, size: int, k: int = 1, stride: int = 1, groups: int = 1,
         extra: int = 0, kind: str | None = None) -> Op:
    """Static (dense) convolution with 'same' padding; ``extra=1`` fuses a residual add into its epilogue."""
    out = -(-size // stride)
    cin_pg, cout_pg = cin // groups, cout // groups
    macs = cin_pg * k * k
    return Op(name, kind or f"conv{k}x{k}" + ("_s2" if stride > 1 else ""), B, cout, out, out, macs, cin, cin_pg,
              cout_pg, k, stride, size, size, weights=macs, extra=extra,
              dram_in=B * cin * size * size * F32, dram_out=B * cout * out * out * F32,
              dram_extra=extra * B * cout * out * out * F32, flops=2.0 * B * cout * out * out * macs)


def pool(name: str, B: int, C: int, size: int, window: int, stride: int, kind: str = "pool") -> Op:
    """Pooling (max or average) of a dense map; ``window == stride == size`` is a global pool."""
    out = -(-size // stride)
    return Op(name, kind, B, C, out, out, window * window, C, 1, 1, window, stride, size, size,
              dram_in=B * C * size * size * F32, dram_out=B * C * out * out * F32,
              flops=float(B * C * out * out * window * window))


def fc(name: str, B: int, cin: int, cout: int, kind: str = "fc") -> Op:
    """Fully connected layer on ``[B, cin]``."""
    return Op(name, kind, B, cout, 1, 1, cin, cin, cin, cout, 1, 1, 1, 1, weights=cin,
              dram_in=B * cin * F32, dram_out=B * cout * F32, flops=2.0 * B * cin * cout)


def masker_pool(name: str, B: int, C: int, size: int, window: int) -> Op:
    """Unfused masker, step 1: average the block input over each patch's receptive area."""
    return pool(name, B, C, size, window, window, kind="masker_pool")


def masker_conv(name: str, B: int, cin: int, grid: int) -> Op:
    """Unfused masker, step 2: 1x1 conv of the pooled map to the logit difference, threshold."""
    return Op(name, "masker_conv1x1", B, 1, grid, grid, cin, cin, cin, 1, 1, 1, grid, grid, weights=cin,
              dram_in=B * cin * grid * grid * F32, dram_out=B * grid * grid * F32, flops=2.0 * B * grid * grid * cin)


def mask_index(name: str, B: int, size: int, window: int, grid: int) -> Op:
    """Pool the masker channel (``size`` x ``size``; ``window=1`` when already pooled), threshold, write indices."""
    return Op(name, "mask_index", B, 1, grid, grid, window * window, 1, 1, 1, window, window, size, size,
              dram_in=B * size * size * F32, dram_out=B * grid * grid * F32, flops=float(B * size * size))


def _window_bytes(P: int, B: int, C: int, L: int, map_size: int) -> float:
    """Unique bytes of P windows of L x L (capped at the whole map)."""
    return min(P * L * L, B * map_size * map_size) * C * F32


def gather(name: str, B: int, P: int, C: int, map_size: int, L: int) -> Op:
    """Copy P windows ``[C, L, L]`` (patch + halo) of a ``[C, map, map]`` map into a dense ``[P, C, L, L]``."""
    return Op(name, "gather", P, C, L, L, 0.0, C, 1, 1, 1, 1, map_size, map_size, in_map_w=map_size,
              in_map_bytes=B * C * map_size * map_size * F32,
              dram_in=_window_bytes(P, B, C, L, map_size), dram_in_run=min(L, map_size) * F32,
              dram_out=P * C * L * L * F32)


def patch_conv3x3(name: str, B: int, P: int, cin: int, cout: int, S: int, stride: int, groups: int,
                  map_size: int, fused_gather: bool) -> Op:
    """3x3 conv producing ``[P, cout, S, S]``; its input is either gathered windows ``[P, cin, L, L]`` (unfused)
    or read directly from the ``[cin, map, map]`` map through the patch index (gather-conv3x3, halo re-read)."""
    L = (S - 1) * stride + 3
    cin_pg, cout_pg = cin // groups, cout // groups
    macs = cin_pg * 9
    if fused_gather:
        src = dict(in_map_w=map_size, dram_in=_window_bytes(P, B, cin, L, map_size), dram_in_run=min(L, map_size) * F32,
                   in_map_bytes=B * cin * map_size * map_size * F32)
    else:
        src = dict(in_map_w=L, dram_in=P * cin * L * L * F32)
    return Op(name, "gather_conv3x3" if fused_gather else "conv3x3_patches", P, cout, S, S, macs, cin, cin_pg,
              cout_pg, 3, stride, L, L, weights=macs, dram_out=P * cout * S * S * F32,
              flops=2.0 * P * cout * S * S * macs, **src)


def gather_conv1x1(name: str, B: int, P: int, cin: int, cout: int, L: int, map_size: int) -> Op:
    """1x1 conv on ``P`` windows ``L x L`` read through the patch index from the ``[cin, map, map]`` block input
    (halos recomputed per window), each written as ``[cout, L, L]`` into conv1's map (the separate masker
    placement's conv1)."""
    return Op(name, "gather_conv1x1", P, cout, L, L, cin, cin, cin, cout, 1, 1, L, L, weights=cin, in_map_w=map_size,
              in_map_bytes=B * cin * map_size * map_size * F32, dram_in=_window_bytes(P, B, cin, L, map_size),
              dram_in_run=min(L, map_size) * F32, dram_out=P * cout * L * L * F32, flops=2.0 * P * cout * L * L * cin)


def patch_conv1x1(name: str, P: int, cin: int, cout: int, S: int) -> Op:
    """1x1 conv on dense patches ``[P, cin, S, S] -> [P, cout, S, S]``."""
    return Op(name, "conv1x1_patches", P, cout, S, S, cin, cin, cin, cout, 1, 1, S, S, weights=cin,
              dram_in=P * cin * S * S * F32, dram_out=P * cout * S * S * F32, flops=2.0 * P * cout * S * S * cin)


def scatter(name: str, B: int, P: int, C: int, S: int, out_size: int) -> Op:
    """Unfused scatter: write P patches ``[C, S, S]`` into a zeroed ``[B, C, H, W]`` output."""
    return Op(name, "scatter", P, C, S, S, 0.0, C, 1, 1, 1, 1, S, S, out_map_w=out_size,
              dram_in=P * C * S * S * F32, dram_out=B * C * out_size * out_size * F32)


def add(name: str, B: int, C: int, size: int) -> Op:
    """Dense element-wise add (+ ReLU) of two ``[B, C, H, W]`` maps."""
    n = B * C * size * size
    return Op(name, "add", B, C, size, size, 1.0, C, 1, 1, 1, 1, size, size, extra=1,
              dram_in=n * F32, dram_extra=n * F32, dram_out=n * F32, flops=float(n))


def scatter_add(name: str, P: int, C: int, S: int, out_size: int) -> Op:
    """Fused scatter-add (+ ReLU) done in place (the paper's kernel, and the compiled network's for blocks
    without a downsample branch): each patch is added to the identity at its position. A block compiled alone
    writes a new output map instead: see :func:`scatter_add_map`."""
    n = P * C * S * S
    return Op(name, "scatter_add", P, C, S, S, 1.0, C, 1, 1, 1, 1, S, S, out_map_w=out_size, extra=1,
              dram_in=n * F32, dram_extra=n * F32, dram_out=n * F32, dram_out_run=min(S, out_size) * F32,
              flops=float(n))


def se_pool(name: str, B: int, P: int, C: int, S: int) -> Op:
    """Squeeze-excitation average over the active patches ``[P, C, S, S] -> [B, C]``."""
    fan = P // max(B, 1)  # 0 without active patches: the pool's region runs over no patch
    return Op(name, "se_pool", B, C, 1, 1, S * S * fan, C, 1, 1, S, S, S, S, item_fan=fan,
              dram_in=P * C * S * S * F32, dram_out=B * C * F32, flops=float(P * C * S * S))


def scatter_add_map(name: str, B: int, P: int, C: int, S: int, out_size: int) -> Op:
    """Fused scatter-add (+ ReLU) into a new map (the toolkit's kernel): every output pixel is written once,
    ``relu(identity + patch or 0)``; the identity is read whole, the ``P`` patches ``[C, S, S]`` once."""
    n = B * C * out_size * out_size
    patch = min(P * C * S * S, n)
    return Op(name, "scatter_add", B, C, out_size, out_size, 1.0, C, 1, 1, 1, 1, out_size, out_size,
              extra=patch / n, dram_in=n * F32, dram_extra=patch * F32, dram_out=n * F32, flops=float(n))


def se_scale(name: str, P: int, C: int, S: int) -> Op:
    """Squeeze-excitation scaling: ``[P, C, S, S]`` times a per-channel scale, written to a new buffer."""
    n = P * C * S * S
    return Op(name, "se_scale", P, C, S, S, 1.0, C, 1, 1, 1, 1, S, S, dram_in=n * F32, dram_out=n * F32,
              flops=float(n))
