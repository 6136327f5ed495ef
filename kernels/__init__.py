"""TensorIR kernels of the LAS block (installed as ``lasnet_tvm.kernels``), one module per operator.

Each module ``m`` has a PrimFunc builder named like the module (``m.<name>(**shape)``), ``m.schedule_cpu``,
``m.schedule_cuda`` (``(func, **shape) -> tvm.s_tir.Schedule``) and ``m.SEARCH_SPACE``. :data:`KERNELS` maps
each operator name to its module name; :func:`get` imports one.
"""

from __future__ import annotations

import importlib

KERNELS = (
    # fused dynamic block
    "masker_conv1x1", "gather_conv3x3", "patch_conv1x1", "scatter_add", "se",
    # unfused forms (paper Table 1 ablation)
    "masker", "gather", "window_conv3x3", "scatter", "add_relu",
    # static dense kernels
    "conv1x1", "conv3x3", "se_dense",
)

BUILDERS = {"se": "se_patches"}  # module -> builder name where they differ


def get(name: str):
    """Import the kernel module ``name`` (one of :data:`KERNELS`)."""
    if name not in KERNELS:
        from ..errors import LasnetError

        raise LasnetError(f"unknown kernel {name!r}; choose one of {', '.join(KERNELS)}")
    return importlib.import_module(f"{__name__}.{name}")


def builder(name: str):
    """The PrimFunc builder of kernel ``name``."""
    return getattr(get(name), BUILDERS.get(name, name))
