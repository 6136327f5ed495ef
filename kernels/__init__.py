"""TensorIR kernels of the LAS block (installed as ``lasnet_tvm.kernels``), one module per operator.

Each module ``m`` has a PrimFunc builder named like the module (``m.<name>(**shape)``), ``m.schedule_cpu`` and
``m.schedule_cuda`` (``(func, **shape) -> tvm.s_tir.Schedule``). :data:`KERNELS` maps each operator name to its
module name; :func:`get` imports one, :func:`builder` gives its PrimFunc builder and :func:`scheduled` its
default schedule for a target, the one place where the CPU or the CUDA schedule is chosen.
"""

from __future__ import annotations

import importlib

KERNELS = (
    # fused dynamic block
    "masker_conv1x1", "gather_conv3x3", "patch_conv1x1", "scatter_add", "se",
    # separate masker placement: conv1 on the active patches' windows only
    "gather_conv1x1",
    # unfused forms (paper Table 1 ablation)
    "masker", "gather", "window_conv3x3", "scatter", "add_relu",
    # static dense kernels
    "conv1x1", "conv3x3", "se_dense",
    # the zero border of a map that another kernel writes the interior of
    "zero_border",
)

#: Kernels with nothing worth tuning (a fill of a map's border): compile never looks them up in a schedule
#: database, and tuning makes no task of them.
UNTUNED = ("zero_border",)

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


def scheduled(name: str, target, func=None, **params):
    """The ``tvm.s_tir.Schedule`` of kernel ``name`` under its default schedule for ``target``.

    ``func`` is the kernel's PrimFunc (default: ``builder(name)(**params)``; give it to schedule a function
    already built, e.g. specialized at a patch count); ``params`` are the builder's parameters. A CUDA target
    (``cuda``, ``nvptx``) gets the module's ``schedule_cuda``, any other ``schedule_cpu``.
    """
    from ..targets import target_kind

    mod = get(name)
    if func is None:
        func = builder(name)(**params)
    schedule = mod.schedule_cuda if target_kind(target) == "cuda" else mod.schedule_cpu
    return schedule(func, **params)
