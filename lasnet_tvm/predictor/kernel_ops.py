"""Predictor ops of each kernel of a block plan: per-kernel predictions for the kernels that actually run.

:func:`lasnet_tvm.block_plan.block_plan` lists the kernels (``Step``) of a compiled block; :func:`step_ops`
maps one step, at ``P`` active patches, to the :class:`~.ops.Op` list the latency model prices, and
:func:`predict_step` gives its predicted latency in **seconds**. A step may map to several ops, priced as the
kernel is compiled: the unfused masker is three kernels (pool, 1x1 conv, index), each one call and launch;
SE is **one** kernel (pool, FCs, scaling: one call; on a CPU two parallel regions, pool and scaling, with the
FCs serial between them; on a GPU one grid per stage); conv3 with the in-place scatter-add as its epilogue is
one kernel and one launch.

The block op lists of :mod:`.network` are built from the same functions (:func:`kernel_ops`), in the plan's
order, so that ``sum(predict_step(s, P, hw) for s in block_plan(...))`` equals
:func:`~.network.predict_block`'s static or dynamic latency (checked by the tests). A step is anything with
``kernel``, ``params`` and ``outputs``. The patches a kernel computes and the CPU schedule a patch conv gets come
from :mod:`lasnet_tvm.kernels.shapes`, which the kernels use too (it does not import TVM).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from ..errors import LasnetError
from ..kernels.shapes import ceil_div, computed_patches, large_weights_3x3
from . import ops
from .ops import Op, OpLatency, op_latency
from .profiles import HardwareProfile

#: Kernels whose cost depends on the number of active patches ``P``.
PATCH_KERNELS = frozenset({"gather", "window_conv3x3", "gather_conv3x3", "se", "patch_conv1x1", "scatter",
                           "scatter_add", "gather_conv1x1"})


def one_patch_per_task(kernel: str, params: Mapping[str, Any]) -> bool:
    """Whether the default CPU schedule of a patch convolution gives every patch its own task (tiles never span
    patches, each patch reads the whole weight tensor). The default CUDA schedules always do (one block per
    patch); calibrated GPU profiles would need that rule instead."""
    if kernel == "patch_conv1x1":
        return False  # blocks of patches per channel tile (kernels/patch_conv1x1.schedule_cpu)
    if kernel == "gather_conv3x3":
        # unpadded: per-patch window staging; padded: blocks of patches per channel tile (schedule_gather_conv_cpu)
        return not params.get("padded", False)
    if kernel == "gather_conv1x1":  # tiles of one window's pixels (kernels/gather_conv1x1.schedule_cpu)
        return True
    if kernel == "window_conv3x3":  # small weights: one task per patch (kernels/gather_conv3x3.schedule_patch_conv_cpu)
        return not large_weights_3x3(params["C"], params.get("groups", 1))
    return False

#: Name of a 1x1 conv by the buffer it writes.
_CONV1X1_NAMES = {"ident": "downsample", "f1": "conv1", "f3": "conv3", "out": "conv3"}  # out: + residual



def _se(B: int, P: int, C: int, R: int, S: int, patches: bool) -> list[Op]:
    """SE on ``P`` items ``[C, S, S]`` (patches, or ``P = B`` whole maps with ``S`` = map size), one kernel
    (``kernels/se.py``, ``kernels/se_dense.py``): the pool starts the call and launches its parallel region (on a
    GPU the patch kernel's count and pool grids); the FCs run serially inside the call on a CPU, one core, one
    lane (fc2 and the sigmoid: two GPU grids); the scaling launches the second parallel region."""
    return [replace(ops.se_pool("se_pool", B, P, C, S), launches=(1.0, 2.0 if patches else 1.0)),
            replace(ops.fc("se_fc1", B, C, R), launches=(0.0, 1.0), calls=0, serial=True),
            replace(ops.fc("se_fc2", B, R, C), launches=(0.0, 2.0), calls=0, serial=True),
            replace(ops.se_scale("se_scale", P, C, S), launches=(1.0, 1.0), calls=0)]


def kernel_ops(kernel: str, params: Mapping[str, Any], P: int = 0, batch: int = 1, out: str = "") -> list[Op]:
    """Ops of one kernel call.

    The padded gather-conv and the patch conv1x1 count the patches they compute: ``P`` rounded up to whole
    patch blocks (:func:`lasnet_tvm.kernels.shapes.computed_patches`). Patch convolutions whose default schedule gives each patch its own task
    (:func:`one_patch_per_task`) get ``Op.max_tile_p = 1`` (used by profiles with ``schedule: default``); the others (large weights, tiled by
    channels) get the op kind suffix ``_large_w``, so that a calibration scales the two schedules apart.

    Parameters
    ----------
    kernel : str
        Kernel name (``lasnet_tvm.kernels.KERNELS``).
    params : mapping
        The kernel's shape parameters (``Step.params``).
    P : int
        Active patches over the batch (ignored by kernels without patches).
    batch : int
        Images (the compiled blocks run batch 1; the predictor allows more).
    out : str
        Name of the first buffer the kernel writes; names a ``conv1x1`` (``ident``: downsample, ``f1``: conv1,
        ``f3``: conv3).

    Returns
    -------
    list of Op
    """
    if kernel == "patch_conv1x1" and params.get("Ho", 0):  # conv3 with the in-place scatter-add as its epilogue
        Ho = params["Ho"]
        conv3 = {k: v for k, v in params.items() if k != "Ho"}
        scatter = dict(C=params["C_out"], Ho=Ho, Wo=Ho, S=params["S"], inplace=True)
        epilogue = [replace(o, launches=(0.0, 0.0), calls=0) for o in kernel_ops("scatter_add", scatter, P, batch, out)]
        return kernel_ops(kernel, conv3, P, batch, out) + epilogue
    if kernel == "patch_conv1x1" or (kernel == "gather_conv3x3" and params.get("padded", False)):
        P = computed_patches(P, params["S"])  # these kernels compute P rounded up to whole patch blocks
    ops_ = _kernel_ops(kernel, params, P, batch, out)
    if one_patch_per_task(kernel, params):
        ops_ = [replace(o, max_tile_p=1) for o in ops_]
    elif kernel in ("window_conv3x3", "gather_conv3x3", "patch_conv1x1"):
        ops_ = [replace(o, kind=o.kind + "_large_w") for o in ops_]
    return ops_


def _kernel_ops(kernel: str, p: Mapping[str, Any], P: int, B: int, out: str) -> list[Op]:
    get = p.get
    if kernel == "conv1x1":
        name = _CONV1X1_NAMES.get(out, "conv1x1")
        return [ops.conv(name, B, p["C_in"], p["C_out"], p["H"], 1, get("stride", 1), extra=int(get("residual", False)))]
    if kernel == "conv3x3":
        return [ops.conv("conv2", B, p["C"], p["C"], p["H"], 3, get("stride", 1), get("groups", 1))]
    if kernel == "se_dense":
        return _se(B, B, p["C"], p["R"], p["H"], patches=False)
    if kernel == "add_relu":
        return [ops.add("add", B, p["C"], p["H"])]
    st = get("stride", 1)
    if kernel in ("masker", "masker_conv1x1"):
        H, S = p["H"], p["S"]
        g = ceil_div(ceil_div(H, st), S)
        if kernel == "masker":
            return [ops.masker_pool("masker_pool", B, p["C_in"], H, S * st),
                    ops.masker_conv("masker_conv1x1", B, p["C_in"], g), ops.mask_index("mask_index", B, g, 1, g)]
        return [ops.conv("masker_conv1", B, p["C_in"], p["C_mid"] + 1, H, kind="masker_conv1x1_fused"),
                ops.mask_index("mask_index", B, H, S * st, g)]
    if kernel == "gather":
        return [ops.gather("gather", B, P, p["C"], p["H"], (p["S"] - 1) * st + 3)]
    if kernel == "gather_conv1x1":
        return [ops.gather_conv1x1("conv1", B, P, p["C_in"], p["C_out"], (p["S"] - 1) * st + 3, p["H"])]
    if kernel == "window_conv3x3":
        L = (p["S"] - 1) * st + 3
        return [ops.patch_conv3x3("conv2", B, P, p["C"], p["C"], p["S"], st, get("groups", 1), L, False)]
    if kernel == "gather_conv3x3":
        return [ops.patch_conv3x3("conv2", B, P, p["C"], p["C"], p["S"], st, get("groups", 1), p["H"], True)]
    if kernel == "se":
        return _se(B, P, p["C"], p["R"], p["S"], patches=True)
    if kernel == "patch_conv1x1":
        return [ops.patch_conv1x1("conv3", P, p["C_in"], p["C_out"], p["S"])]
    if kernel == "scatter":
        return [ops.scatter("scatter", B, P, p["C"], p["S"], p["Ho"])]
    if kernel == "scatter_add" and get("inplace", False):
        return [ops.scatter_add("scatter_add", P, p["C"], p["S"], p["Ho"])]
    if kernel == "scatter_add":
        return [ops.scatter_add_map("scatter_add", B, P, p["C"], p["S"], p["Ho"])]
    raise LasnetError(f"no latency model for kernel {kernel!r}")


def step_ops(step: Any, P: int = 0, batch: int = 1) -> list[Op]:
    """Ops of one ``block_plan`` step at ``P`` active patches over the batch (see :func:`kernel_ops`)."""
    out = step.outputs[0][0] if step.outputs else ""
    return kernel_ops(step.kernel, step.params, P, batch, out)


def step_latencies(step: Any, P: int, hw: HardwareProfile, batch: int = 1) -> list[OpLatency]:
    """Predicted latency of each op of a step (seconds, with parts)."""
    return [op_latency(o, hw) for o in step_ops(step, P, batch)]


def predict_step(step: Any, P: int, hw: HardwareProfile, batch: int = 1) -> float:
    """Predicted latency of one ``block_plan`` step at ``P`` active patches on ``hw``, in **seconds**."""
    return sum(o.total for o in step_latencies(step, P, hw, batch))
