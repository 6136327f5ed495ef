"""The LAS model zoo: LAS-ResNet-50/101 and LAS-RegNetY-400MF/800MF and their static counterparts."""

from __future__ import annotations

from typing import Sequence

from ..archs import ARCHS, arch_spec
from .backbones import LASNet
from .blocks import LASBlock, SqueezeExcitation

__all__ = ["ARCHS", "LASNet", "LASBlock", "SqueezeExcitation", "build_model"] + list(ARCHS)


def build_model(
    arch: str,
    granularity: str | int | Sequence[int] = 1,
    input_size: int = 224,
    num_classes: int = 1000,
    width_mult: float = 1.0,
    se_pool: str = "active",
    static: bool = False,
    depths: str | Sequence[int] | None = None,
) -> LASNet:
    """Build a LAS backbone by name (see :data:`~lasnet_tvm.archs.ARCHS`).

    Parameters
    ----------
    arch : str
        ``las_resnet50``, ``las_resnet101``, ``las_regnety_400mf`` or ``las_regnety_800mf``.
    granularity : str, int or sequence of int
        S per stage (``"4-4-2-1"``) or per block (a list, as the official code takes).
    input_size, num_classes, width_mult :
        Input side in pixels, classifier width, channel multiplier (small models for tests and demos).
    se_pool : {"active", "dense"}
        Squeeze-excitation pooling of LAS-RegNetY (see :mod:`lasnet_tvm.models.blocks`).
    static : bool
        Build the static counterpart (maskers off).
    depths : str or sequence of int, optional
        Blocks per stage (``"1-1-1-1"``) for a shallower or deeper variant; default: the backbone's own.
    """
    spec = arch_spec(arch, granularity, input_size, num_classes, width_mult, depths)
    return LASNet(spec, se_pool=se_pool, static=static)


def _factory(arch: str):
    def make(granularity=1, input_size=224, num_classes=1000, width_mult=1.0, se_pool="active", static=False):
        return build_model(arch, granularity, input_size, num_classes, width_mult, se_pool, static)

    make.__name__ = arch
    make.__doc__ = f"Build ``{arch}`` (see :func:`build_model`)."
    return make


las_resnet50 = _factory("las_resnet50")
las_resnet101 = _factory("las_resnet101")
las_regnety_400mf = _factory("las_regnety_400mf")
las_regnety_800mf = _factory("las_regnety_800mf")
