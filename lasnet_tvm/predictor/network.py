"""Block and network latency of the LAS backbones and their static counterparts.

The op lists follow the kernels that the toolkit compiles (:func:`lasnet_tvm.block_plan.block_plan`; ops per
kernel from :mod:`.kernel_ops`). A **static block** runs the dense downsample branch when it has one, conv1
(1x1), conv2 (3x3, stride, groups), SE (pool over the map, fc1, fc2, scaling into a new map), conv3 (1x1) and
a separate residual add + ReLU.

A **dynamic block** at granularity S and activation rate r computes ``P = round(r * grid^2)`` patches per image
(``grid = ceil(out / S)``; edge patches are computed whole). The fusion variants are the rows of paper Table 1:

========================  ==========================================================================
``none``                  masker pool + masker 1x1 (reads the block input again) + index; dense conv1;
                          gather of conv1 windows with halo ``L = (S-1)*stride + 3``; 3x3 conv on the
                          gathered windows; conv3 on patches; scatter into a zeroed map; dense add.
``masker``                conv1 with one extra output channel (the masker, Eq. 3) + pool/threshold/index
                          of that channel; the rest as ``none``.
``masker+gather``         as ``masker`` with the gather fused into the 3x3 conv (gather-conv3x3).
``all``                   as ``masker+gather`` with scatter and add fused (scatter-add into a new map:
                          the identity is read and the output written whole).
========================  ==========================================================================

With fusion ``all`` the masker placement may be ``separate`` instead of ``fused``: masker pool + masker 1x1 +
index on the block input; conv1 on each active patch's window ``L x L`` only (gather-conv1x1, halos
recomputed, ``P * L^2 * C_in * C_mid`` MACs) into the map the gather-conv3x3 reads; the rest as ``all``.

SE in a dynamic block pools over the active patches only and scales them into a new buffer. The downsample
branch stays dense. The stem (ResNet: 7x7/2 conv and 3x3/2 max-pool; RegNet: 3x3/2 conv) and the head
(global pool, fc) are static.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

from ..archs import ArchSpec, BlockSpec, arch_spec, format_granularity
from ..block_plan import Fusion, MaskerPlacement
from ..errors import LasnetError
from . import ops
from .kernel_ops import kernel_ops
from .ops import Op, OpLatency, op_latency
from .profiles import HardwareProfile


def active_patches(block: BlockSpec, rate: float, batch: int = 1) -> int:
    """Active patches over the batch: ``round(rate * grid^2)`` per image."""
    if not 0.0 <= rate <= 1.0:
        raise LasnetError(f"activation rate must be in [0, 1], got {rate}")
    return int(round(rate * block.num_patches)) * batch


def static_block_ops(b: BlockSpec, batch: int = 1) -> list[Op]:
    """Kernels of the static block, in the order of ``block_plan(b, static=True)``."""
    H, Ho, cm, co = b.in_size, b.out_size, b.c_mid, b.c_out
    k = functools.partial(kernel_ops, batch=batch)
    out: list[Op] = []
    if b.downsample:
        out += k("conv1x1", dict(C_in=b.c_in, C_out=co, H=H, W=H, stride=b.stride), out="ident")
    out += k("conv1x1", dict(C_in=b.c_in, C_out=cm, H=H, W=H), out="f1")
    out += k("conv3x3", dict(C=cm, H=H, W=H, stride=b.stride, groups=b.groups))
    if b.se_channels:
        out += k("se_dense", dict(C=cm, R=b.se_channels, H=Ho, W=Ho))
    out += k("conv1x1", dict(C_in=cm, C_out=co, H=Ho, W=Ho, residual=True), out="out")  # + residual add, ReLU
    return out


def dynamic_block_ops(b: BlockSpec, P: int, fusion: Fusion | str = Fusion.ALL, batch: int = 1,
                      masker: MaskerPlacement | str = MaskerPlacement.FUSED) -> list[Op]:
    """Kernels of the dynamic block with ``P`` active patches over the batch, a fusion variant and a masker
    placement, in the order of ``block_plan(b, fusion, masker=masker)``.

    Raises
    ------
    LasnetError
        Masker placement ``separate`` with a fusion level other than ``all``.
    """
    fusion, masker = Fusion.parse(fusion), MaskerPlacement.parse(masker)
    separate = masker is MaskerPlacement.SEPARATE
    if separate and fusion is not Fusion.ALL:
        raise LasnetError(f"masker placement separate needs fusion all, not {fusion.value}")
    H, Ho, S, st, cm, co = b.in_size, b.out_size, b.S, b.stride, b.c_mid, b.c_out
    k = functools.partial(kernel_ops, P=P, batch=batch)
    out: list[Op] = []
    if b.downsample:
        out += k("conv1x1", dict(C_in=b.c_in, C_out=co, H=H, W=H, stride=st), out="ident")
    if fusion is Fusion.NONE or separate:
        out += k("masker", dict(C_in=b.c_in, H=H, W=H, S=S, stride=st))
    if separate:
        out += k("gather_conv1x1", dict(C_in=b.c_in, C_out=cm, H=H, W=H, S=S, stride=st))
    elif fusion is Fusion.NONE:
        out += k("conv1x1", dict(C_in=b.c_in, C_out=cm, H=H, W=H), out="f1")
    else:
        out += k("masker_conv1x1", dict(C_in=b.c_in, C_mid=cm, H=H, W=H, S=S, stride=st))
    if fusion in (Fusion.NONE, Fusion.MASKER):
        out += k("gather", dict(C=cm, H=H, W=H, S=S, stride=st))
        out += k("window_conv3x3", dict(C=cm, S=S, stride=st, groups=b.groups))
    else:
        out += k("gather_conv3x3", dict(C=cm, H=H, W=H, S=S, stride=st, groups=b.groups, padded=True))
    if b.se_channels:
        out += k("se", dict(C=cm, R=b.se_channels, Ho=Ho, S=S))
    out += k("patch_conv1x1", dict(C_in=cm, C_out=co, S=S))
    if fusion is Fusion.ALL:
        out += k("scatter_add", dict(C=co, Ho=Ho, Wo=Ho, S=S))
    else:
        out += k("scatter", dict(C=co, Ho=Ho, Wo=Ho, S=S))
        out += k("add_relu", dict(C=co, H=Ho, W=Ho))
    return out


class _StaticDynamic:
    """Static and dynamic latency (seconds) and their ratio, from :meth:`_total`."""

    def _total(self, static: bool) -> float:
        raise NotImplementedError

    @property
    def static_s(self) -> float:
        return self._total(static=True)

    @property
    def dynamic_s(self) -> float:
        return self._total(static=False)

    @property
    def ratio(self) -> float:
        """Latency ratio ``r_l = l_dyn / l_stat``."""
        return self.dynamic_s / self.static_s


@dataclass(frozen=True)
class BlockLatency(_StaticDynamic):
    """Predicted latency of one block, static and dynamic (seconds), with per-op breakdowns."""

    name: str
    stage: int
    S: int
    rate: float
    static: tuple[OpLatency, ...]
    dynamic: tuple[OpLatency, ...]
    masker: MaskerPlacement = MaskerPlacement.FUSED

    def _total(self, static: bool) -> float:
        return sum(o.total for o in (self.static if static else self.dynamic))

    @property
    def dominant(self) -> str:
        mem = sum(o.memory for o in self.dynamic)
        comp = sum(o.compute for o in self.dynamic)
        return "memory" if mem >= comp else "compute"


def predict_block(block: BlockSpec, hw: HardwareProfile, rate: float, fusion: Fusion | str = Fusion.ALL,
                  batch: int = 1, masker: MaskerPlacement | str = MaskerPlacement.FUSED) -> BlockLatency:
    """Static and dynamic latency of one block at activation rate ``rate`` (granularity = ``block.S``) with a
    masker placement (:class:`~lasnet_tvm.block_plan.MaskerPlacement`)."""
    P = active_patches(block, rate, batch)
    st = tuple(op_latency(o, hw) for o in static_block_ops(block, batch))
    dy = tuple(op_latency(o, hw) for o in dynamic_block_ops(block, P, fusion, batch, masker))
    return BlockLatency(block.name, block.stage, block.S, rate, st, dy, MaskerPlacement.parse(masker))


def masker_options(masker: MaskerPlacement | str, fusion: Fusion | str = Fusion.ALL) -> list[MaskerPlacement]:
    """The placements a block may take under ``masker``: that one, or for ``"auto"`` every placement (fused
    first; only fused below fusion ``all``)."""
    if str(masker) != "auto":
        return [MaskerPlacement.parse(masker)]
    return list(MaskerPlacement) if Fusion.parse(fusion) is Fusion.ALL else [MaskerPlacement.FUSED]


def predict_block_at(block: BlockSpec, hw: HardwareProfile, rate: float, fusion: Fusion | str = Fusion.ALL,
                     batch: int = 1, masker: MaskerPlacement | str = MaskerPlacement.FUSED) -> BlockLatency:
    """:func:`predict_block` at the placement ``masker``, or for ``"auto"`` at the one of lower predicted
    dynamic latency (fused on a tie), as ``compile --masker auto`` chooses."""
    options = [predict_block(block, hw, rate, fusion, batch, m) for m in masker_options(masker, fusion)]
    return min(options, key=lambda b: b.dynamic_s)


@dataclass(frozen=True)
class NetworkLatency(_StaticDynamic):
    """Predicted latency of a whole network (seconds)."""

    arch: str
    device: str
    granularity: str
    fusion: Fusion
    batch: int
    stem: tuple[OpLatency, ...]
    head: tuple[OpLatency, ...]
    blocks: tuple[BlockLatency, ...]

    def _total(self, static: bool) -> float:
        return sum(o.total for o in self.stem + self.head) + sum(b._total(static) for b in self.blocks)


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


def predict_spec(spec: ArchSpec, hw: HardwareProfile, rate: float | Sequence[float],
                 fusion: Fusion | str = Fusion.ALL, batch: int = 1,
                 masker: MaskerPlacement | str = MaskerPlacement.FUSED) -> NetworkLatency:
    """Latency of a network given as an :class:`ArchSpec` (its granularity is in the block specs), every block
    at the masker placement ``masker`` (``"auto"``: each at its cheaper one, :func:`predict_block_at`)."""
    if batch < 1:
        raise LasnetError(f"batch must be >= 1, got {batch}")
    rates = _rates(rate, len(spec.blocks))
    fusion = Fusion.parse(fusion)
    blocks = tuple(predict_block_at(b, hw, r, fusion, batch, masker) for b, r in zip(spec.blocks, rates))
    depths = [sum(1 for b in spec.blocks if b.stage == s) for s in range(1, 5)]
    return NetworkLatency(
        spec.arch, hw.name, format_granularity(spec.granularity, depths), fusion, batch,
        tuple(op_latency(o, hw) for o in stem_ops(spec, batch)),
        tuple(op_latency(o, hw) for o in head_ops(spec, batch)), blocks)


def predict_network(arch: str, hw: HardwareProfile, granularity: str | int | Sequence[int] = "4-4-2-1",
                    rate: float | Sequence[float] = 0.5, fusion: Fusion | str = Fusion.ALL, batch: int = 1,
                    input_size: int = 224, masker: MaskerPlacement | str = MaskerPlacement.FUSED) -> NetworkLatency:
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
    fusion : Fusion or its name
    batch, input_size : int
    masker : MaskerPlacement, its name, or ``"auto"``
        Where each block computes its masker (``"auto"``: the cheaper placement per block).

    Returns
    -------
    NetworkLatency
    """
    return predict_spec(arch_spec(arch, granularity, input_size), hw, rate, fusion, batch, masker)
