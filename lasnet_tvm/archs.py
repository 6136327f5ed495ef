"""Architecture specifications of the four LAS backbones, shared by models, kernels, predictor and tuner.

A backbone is a stem, four stages of bottleneck blocks and a classifier. Each block is described by a
:class:`BlockSpec` (channels, stride, groups, squeeze-excitation width, feature sizes and granularity S), so
that every part of the toolkit (PyTorch model, TensorIR kernels, latency predictor, tuner) agrees on shapes.

Edge-patch rule
---------------
A block with output size ``H_out`` and granularity ``S`` has a coarse grid of ``ceil(H_out / S)`` patches per
side. Every patch is ``S x S`` output pixels; patches of the last row and column are clipped at the border when
``S`` does not divide ``H_out``. The masker averages the block input over each patch's (clipped) receptive area
``[i * S * stride, min((i + 1) * S * stride, H_in))``. When ``S`` divides ``H_out`` this is exactly the official
LASNet masker (``adaptive_avg_pool2d`` to ``H_out // S`` then nearest upsampling).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Sequence

from .errors import LasnetError

#: A granularity written as text: positive integers joined by one kind of separator, '-' (one S per stage)
#: or ',' (one S per block), or a single S.
GRANULARITY_TEXT = re.compile(r"^[1-9]\d*(?:(?:-[1-9]\d*)*|(?:,[1-9]\d*)*)$")

ARCHS = ("las_resnet50", "las_resnet101", "las_regnety_400mf", "las_regnety_800mf")

_RESNET_DEPTHS = {"las_resnet50": (3, 4, 6, 3), "las_resnet101": (3, 4, 23, 3)}
# torchvision RegNetY parameters (what BlockParams.from_init_params yields for 400MF and 800MF).
_REGNET = {
    "las_regnety_400mf": dict(depths=(1, 3, 6, 6), widths=(48, 104, 208, 440), group_width=8),
    "las_regnety_800mf": dict(depths=(1, 3, 8, 2), widths=(64, 144, 320, 784), group_width=16),
}
_OFFICIAL_NAMES = {
    "las_resnet50": "dyn_resnet50",
    "las_resnet101": "dyn_resnet101",
    "las_regnety_400mf": "dyn_regnet_y_400mf",
    "las_regnety_800mf": "dyn_regnet_y_800mf",
}


def conv_out(size: int, stride: int) -> int:
    """Output size of a 3x3 (or 7x7/maxpool) layer with 'same' padding and ``stride``: ceil(size / stride)."""
    return -(-size // stride)


@dataclass(frozen=True)
class BlockSpec:
    """Shape of one LAS bottleneck block.

    Attributes
    ----------
    name : str
        Parameter prefix in the model's state_dict (e.g. ``layer1.0`` or ``trunk_output.block1.block1-0``).
    stage, index : int
        Stage (1..4) and position in the stage (0-based).
    c_in, c_mid, c_out : int
        Input, bottleneck and output channels.
    stride : int
        Stride of the 3x3 convolution (and of the downsample branch).
    groups : int
        Groups of the 3x3 convolution.
    se_channels : int
        Squeeze-excitation hidden width (0: no SE).
    in_size, out_size : int
        Input and output feature size (square).
    S : int
        Spatial granularity of the mask.
    downsample : bool
        Whether the identity goes through a 1x1 conv + BN (dense).
    """

    name: str
    stage: int
    index: int
    c_in: int
    c_mid: int
    c_out: int
    stride: int
    groups: int
    se_channels: int
    in_size: int
    out_size: int
    S: int = 1
    downsample: bool = False

    @property
    def grid(self) -> int:
        """Patches per side of the coarse mask grid."""
        return math.ceil(self.out_size / self.S)

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid


@dataclass(frozen=True)
class ArchSpec:
    """A whole backbone: stem, blocks and classifier."""

    arch: str
    family: str  # "resnet" or "regnet"
    input_size: int
    num_classes: int
    width_mult: float
    stem_channels: int
    blocks: tuple[BlockSpec, ...] = field(default_factory=tuple)

    @property
    def granularity(self) -> tuple[int, ...]:
        return tuple(b.S for b in self.blocks)

    @property
    def feature_channels(self) -> int:
        return self.blocks[-1].c_out

    @property
    def official_name(self) -> str:
        return _OFFICIAL_NAMES[self.arch]

    @property
    def depths(self) -> tuple[int, ...]:
        """Blocks per stage."""
        return tuple(sum(1 for b in self.blocks if b.stage == s) for s in range(1, 5))

    def stage_sizes(self) -> tuple[int, ...]:
        """Output feature size of each stage."""
        return tuple(max(b.out_size for b in self.blocks if b.stage == s) for s in range(1, 5))


def _scale(width: int, mult: float, divisor: int = 8) -> int:
    return max(divisor, int(round(width * mult / divisor)) * divisor)


def parse_granularity(granularity: str | int | Sequence[int], depths: Sequence[int]) -> tuple[int, ...]:
    """Expand a granularity to one S per block.

    Parameters
    ----------
    granularity : str, int or sequence of int
        ``"4-4-2-1"`` (one S per stage), an int (all blocks), a list with one S per stage, or a list with
        one S per block (as the official code takes).
    depths : sequence of int
        Blocks per stage.
    """
    n_blocks = sum(depths)
    if isinstance(granularity, int):
        values: list[int] = [granularity]
    elif isinstance(granularity, str):
        if not GRANULARITY_TEXT.match(granularity.strip()):
            raise LasnetError(f"granularity {granularity!r}: expected positive integers joined by '-' (per stage, "
                              "e.g. 4-4-2-1) or ',' (per block)")
        values = [int(v) for v in re.split("[-,]", granularity.strip())]
    else:
        values = [int(v) for v in granularity]
    if any(v < 1 for v in values):
        raise LasnetError(f"granularity {granularity!r}: every S must be >= 1")
    if len(values) == 1:
        return tuple(values * n_blocks)
    if len(values) == len(depths):
        return tuple(v for v, d in zip(values, depths) for _ in range(d))
    if len(values) == n_blocks:
        return tuple(values)
    raise LasnetError(
        f"granularity {granularity!r}: expected 1, {len(depths)} (per stage) or {n_blocks} (per block) values"
    )


def format_granularity(per_block: Sequence[int], depths: Sequence[int]) -> str:
    """Per-stage form ``"4-4-2-1"`` when every stage is uniform, else the per-block values joined by ','."""
    out, i = [], 0
    for d in depths:
        stage = per_block[i : i + d]
        if len(set(stage)) != 1:
            return ",".join(str(v) for v in per_block)
        out.append(str(stage[0]))
        i += d
    return "-".join(out)


def depths_of(arch: str, depths: Sequence[int] | None = None) -> tuple[int, ...]:
    """Blocks per stage of ``arch``: its standard depths, or ``depths`` (four ints >= 1) when given."""
    _check_arch(arch)
    if depths is not None:
        return parse_depths(depths)
    if arch in _RESNET_DEPTHS:
        return _RESNET_DEPTHS[arch]
    return _REGNET[arch]["depths"]


def parse_depths(depths: str | Sequence[int]) -> tuple[int, ...]:
    """Blocks per stage from ``"1-1-1-1"`` or a sequence of four ints, each >= 1."""
    try:
        values = ([int(v) for v in depths.replace(",", "-").split("-") if v.strip()] if isinstance(depths, str)
                  else [int(v) for v in depths])
    except (TypeError, ValueError):
        raise LasnetError(f"depths {depths!r}: expected four integers like '1-1-1-1'") from None
    if len(values) != 4 or any(v < 1 for v in values):
        raise LasnetError(f"depths {depths!r}: expected four integers >= 1 (blocks per stage)")
    return tuple(values)


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise LasnetError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")


def arch_spec(
    arch: str,
    granularity: str | int | Sequence[int] = 1,
    input_size: int = 224,
    num_classes: int = 1000,
    width_mult: float = 1.0,
    depths: str | Sequence[int] | None = None,
) -> ArchSpec:
    """Build the :class:`ArchSpec` of a backbone.

    ``depths`` (blocks per stage, e.g. ``(1, 1, 1, 1)``) makes a shallower or deeper variant of ``arch``
    (same block shapes); None keeps the backbone's own depths.

    Raises
    ------
    LasnetError
        Unknown arch, malformed granularity, or an S larger than its block's feature size.
    """
    _check_arch(arch)
    if input_size < 32:
        raise LasnetError(f"input size {input_size} is too small (at least 32)")
    if num_classes < 1:
        raise LasnetError(f"number of classes must be >= 1, got {num_classes}")
    if width_mult <= 0:
        raise LasnetError(f"width multiplier must be > 0, got {width_mult}")
    depths = depths_of(arch, depths)
    per_block = parse_granularity(granularity, depths)
    blocks: list[BlockSpec] = []
    if arch in _RESNET_DEPTHS:
        family = "resnet"
        stem = int(64 * width_mult)
        size = conv_out(conv_out(input_size, 2), 2)  # conv 7x7/2, maxpool 3x3/2
        c_in = stem
        for s, depth in enumerate(depths):
            planes = int((64 << s) * width_mult)
            for i in range(depth):
                stride = 2 if (s > 0 and i == 0) else 1
                out_size = conv_out(size, stride)
                blocks.append(
                    BlockSpec(
                        name=f"layer{s + 1}.{i}", stage=s + 1, index=i, c_in=c_in, c_mid=planes,
                        c_out=planes * 4, stride=stride, groups=1, se_channels=0, in_size=size,
                        out_size=out_size, downsample=(i == 0 and (stride != 1 or c_in != planes * 4)),
                    )
                )
                c_in, size = planes * 4, out_size
    else:
        family = "regnet"
        cfg = _REGNET[arch]
        gw = cfg["group_width"]
        stem = _scale(32, width_mult)
        size = conv_out(input_size, 2)  # stem conv 3x3/2
        c_in = stem
        for s, (depth, width) in enumerate(zip(depths, cfg["widths"])):
            w = _scale(width, width_mult, divisor=min(gw, _scale(width, width_mult)))
            group_width = min(gw, w)
            for i in range(depth):
                stride = 2 if i == 0 else 1
                out_size = conv_out(size, stride)
                blocks.append(
                    BlockSpec(
                        name=f"trunk_output.block{s + 1}.block{s + 1}-{i}", stage=s + 1, index=i, c_in=c_in,
                        c_mid=w, c_out=w, stride=stride, groups=w // group_width,
                        se_channels=int(round(0.25 * c_in)), in_size=size, out_size=out_size,
                        downsample=(c_in != w or stride != 1),
                    )
                )
                c_in, size = w, out_size
    for b, S in zip(blocks, per_block):
        if S > b.out_size:
            raise LasnetError(
                f"granularity S={S} of block {b.name} exceeds its feature size {b.out_size}x{b.out_size}"
            )
    blocks = [replace(b, S=S) for b, S in zip(blocks, per_block)]
    return ArchSpec(arch, family, input_size, num_classes, width_mult, stem, tuple(blocks))
