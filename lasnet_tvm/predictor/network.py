"""Block and network latency of the LAS backbones and their static counterparts.

A **static block** runs conv1 (1x1), conv2 (3x3, stride, groups), SE (pool over the map, fc1, fc2; the scale is
folded into conv3's input), conv3 (1x1) with the residual add + ReLU fused into its epilogue (as cuDNN and TVM
do), and the dense downsample branch when the block has one.

A **dynamic block** at granularity S and activation rate r computes ``P = round(r * grid^2)`` patches per image
(``grid = ceil(out / S)``; edge patches are computed whole). The fusion variants are the rows of paper Table 1:

========================  ==========================================================================
``none``                  masker pool + masker 1x1 (reads the block input again) + index; dense conv1;
                          gather of conv1 windows with halo ``L = (S-1)*stride + 3``; 3x3 conv on the
                          gathered windows; conv3 on patches; scatter into a zeroed map; dense add.
``masker``                conv1 with one extra output channel (the masker, Eq. 3) + pool/threshold/index
                          of that channel; the rest as ``none``.
``masker+gather``         as ``masker`` with the gather fused into the 3x3 conv (gather-conv3x3).
``all``                   as ``masker+gather`` with scatter and add fused (in-place scatter-add).
========================  ==========================================================================

SE in a dynamic block pools over the active patches only. The downsample branch stays dense. The stem
(ResNet: 7x7/2 conv and 3x3/2 max-pool; RegNet: 3x3/2 conv) and the head (global pool, fc) are static.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..archs import ArchSpec, BlockSpec, arch_spec, format_granularity
from ..errors import LasnetError
from . import ops
from .ops import Op, OpLatency, op_latency
from .profiles import HardwareProfile

FUSIONS = ("none", "masker", "masker+gather", "all")


def active_patches(block: BlockSpec, rate: float, batch: int = 1) -> int:
    """Active patches over the batch: ``round(rate * grid^2)`` per image."""
    if not 0.0 <= rate <= 1.0:
        raise LasnetError(f"activation rate must be in [0, 1], got {rate}")
    return int(round(rate * block.num_patches)) * batch


def static_block_ops(b: BlockSpec, batch: int = 1) -> list[Op]:
    """Kernels of the static block."""
    B = batch
    out = [ops.conv("conv1", B, b.c_in, b.c_mid, b.in_size)]
    if b.downsample:
        out.append(ops.conv("downsample", B, b.c_in, b.c_out, b.in_size, 1, b.stride))
    out.append(ops.conv("conv2", B, b.c_mid, b.c_mid, b.in_size, 3, b.stride, b.groups))
    if b.se_channels:
        out += [ops.pool("se_pool", B, b.c_mid, b.out_size, b.out_size, b.out_size, kind="se_pool"),
                ops.fc("se_fc1", B, b.c_mid, b.se_channels), ops.fc("se_fc2", B, b.se_channels, b.c_mid)]
    out.append(ops.conv("conv3_add", B, b.c_mid, b.c_out, b.out_size, extra=1, kind="conv1x1_add"))
    return out


def dynamic_block_ops(b: BlockSpec, P: int, fusion: str = "all", batch: int = 1) -> list[Op]:
    """Kernels of the dynamic block with ``P`` active patches over the batch and a fusion variant."""
    if fusion not in FUSIONS:
        raise LasnetError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
    B, S, g = batch, b.S, b.grid
    window = S * b.stride
    out: list[Op] = []
    if fusion == "none":
        out += [ops.masker_pool("masker_pool", B, b.c_in, b.in_size, window),
                ops.masker_conv("masker_conv1x1", B, b.c_in, g),
                ops.mask_index("mask_index", B, g, 1, g),
                ops.conv("conv1", B, b.c_in, b.c_mid, b.in_size)]
    else:
        c1 = ops.conv("masker_conv1", B, b.c_in, b.c_mid + 1, b.in_size, kind="masker_conv1x1_fused")
        out += [c1, ops.mask_index("mask_index", B, b.in_size, window, g)]
    if b.downsample:
        out.append(ops.conv("downsample", B, b.c_in, b.c_out, b.in_size, 1, b.stride))
    L = (S - 1) * b.stride + 3
    fused_gather = fusion in ("masker+gather", "all")
    if not fused_gather:
        out.append(ops.gather("gather", B, P, b.c_mid, b.in_size, L))
    out.append(ops.patch_conv3x3("conv2", B, P, b.c_mid, b.c_mid, S, b.stride, b.groups, b.in_size, fused_gather))
    if b.se_channels:
        out += [ops.se_pool("se_pool", B, P, b.c_mid, S),
                ops.fc("se_fc1", B, b.c_mid, b.se_channels), ops.fc("se_fc2", B, b.se_channels, b.c_mid)]
    out.append(ops.patch_conv1x1("conv3", P, b.c_mid, b.c_out, S))
    if fusion == "all":
        out.append(ops.scatter_add("scatter_add", P, b.c_out, S, b.out_size))
    else:
        out += [ops.scatter("scatter", B, P, b.c_out, S, b.out_size), ops.add("add", B, b.c_out, b.out_size)]
    return out


@dataclass(frozen=True)
class BlockLatency:
    """Predicted latency of one block, static and dynamic (seconds), with per-op breakdowns."""

    name: str
    stage: int
    S: int
    rate: float
    static: tuple[OpLatency, ...]
    dynamic: tuple[OpLatency, ...]

    @property
    def static_s(self) -> float:
        return sum(o.total for o in self.static)

    @property
    def dynamic_s(self) -> float:
        return sum(o.total for o in self.dynamic)

    @property
    def ratio(self) -> float:
        """Latency ratio ``r_l = l_dyn / l_stat``."""
        return self.dynamic_s / self.static_s

    @property
    def dominant(self) -> str:
        mem = sum(o.memory for o in self.dynamic)
        comp = sum(o.compute for o in self.dynamic)
        return "memory" if mem >= comp else "compute"


def predict_block(block: BlockSpec, hw: HardwareProfile, rate: float, fusion: str = "all",
                  batch: int = 1) -> BlockLatency:
    """Static and dynamic latency of one block at activation rate ``rate`` (granularity = ``block.S``)."""
    P = active_patches(block, rate, batch)
    st = tuple(op_latency(o, hw) for o in static_block_ops(block, batch))
    dy = tuple(op_latency(o, hw) for o in dynamic_block_ops(block, P, fusion, batch))
    return BlockLatency(block.name, block.stage, block.S, rate, st, dy)


@dataclass(frozen=True)
class NetworkLatency:
    """Predicted latency of a whole network (seconds)."""

    arch: str
    device: str
    granularity: str
    fusion: str
    batch: int
    stem: tuple[OpLatency, ...]
    head: tuple[OpLatency, ...]
    blocks: tuple[BlockLatency, ...]

    @property
    def static_s(self) -> float:
        return sum(o.total for o in self.stem + self.head) + sum(b.static_s for b in self.blocks)

    @property
    def dynamic_s(self) -> float:
        return sum(o.total for o in self.stem + self.head) + sum(b.dynamic_s for b in self.blocks)

    @property
    def ratio(self) -> float:
        return self.dynamic_s / self.static_s


def stem_ops(spec: ArchSpec, batch: int = 1) -> list[Op]:
    n = spec.input_size
    if spec.family == "resnet":
        size = -(-n // 2)
        return [ops.conv("stem_conv", batch, 3, spec.stem_channels, n, 7, 2),
                ops.pool("stem_maxpool", batch, spec.stem_channels, size, 3, 2, kind="maxpool")]
    return [ops.conv("stem_conv", batch, 3, spec.stem_channels, n, 3, 2)]


def head_ops(spec: ArchSpec, batch: int = 1) -> list[Op]:
    last = spec.blocks[-1]
    return [ops.pool("avgpool", batch, last.c_out, last.out_size, last.out_size, last.out_size, kind="avgpool"),
            ops.fc("fc", batch, last.c_out, spec.num_classes)]


def _rates(rate: float | Sequence[float], n: int) -> list[float]:
    if isinstance(rate, (int, float)):
        return [float(rate)] * n
    rates = [float(r) for r in rate]
    if len(rates) == 1:
        return rates * n
    if len(rates) != n:
        raise LasnetError(f"expected 1 activation rate or {n} (one per block), got {len(rates)}")
    return rates


def predict_spec(spec: ArchSpec, hw: HardwareProfile, rate: float | Sequence[float], fusion: str = "all",
                 batch: int = 1) -> NetworkLatency:
    """Latency of a network given as an :class:`ArchSpec` (its granularity is in the block specs)."""
    if batch < 1:
        raise LasnetError(f"batch must be >= 1, got {batch}")
    rates = _rates(rate, len(spec.blocks))
    blocks = tuple(predict_block(b, hw, r, fusion, batch) for b, r in zip(spec.blocks, rates))
    depths = [sum(1 for b in spec.blocks if b.stage == s) for s in range(1, 5)]
    return NetworkLatency(
        spec.arch, hw.name, format_granularity(spec.granularity, depths), fusion, batch,
        tuple(op_latency(o, hw) for o in stem_ops(spec, batch)),
        tuple(op_latency(o, hw) for o in head_ops(spec, batch)), blocks)


def predict_network(arch: str, hw: HardwareProfile, granularity: str | int | Sequence[int] = "4-4-2-1",
                    rate: float | Sequence[float] = 0.5, fusion: str = "all", batch: int = 1,
                    input_size: int = 224) -> NetworkLatency:
    """Latency of a LAS backbone and its static counterpart.

    Parameters
    ----------
    arch : str
        One of :data:`lasnet_tvm.archs.ARCHS`.
    hw : HardwareProfile
    granularity : str, int or sequence of int
        ``"4-4-2-1"`` (per stage), one int, or one S per block.
    rate : float or sequence of float
        Activation rate, one for all blocks or one per block.
    fusion : str
        One of :data:`FUSIONS`.
    batch, input_size : int

    Returns
    -------
    NetworkLatency
    """
    return predict_spec(arch_spec(arch, granularity, input_size), hw, rate, fusion, batch)
