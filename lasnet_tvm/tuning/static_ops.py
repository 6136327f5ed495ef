"""Tuning tasks for the static operators of a network: stem, pooling, classifier.

These are the PrimFuncs that Relax legalization and operator fusion make of everything outside the LAS
blocks (the blocks' own kernels, the downsample convolutions and the static counterparts' kernels are
:class:`~.tasks.Task` s). They are taken from the compiler's own pipeline, stopped right before
``ApplyTunedSchedules``, so that the workloads tuned here are structurally equal to those the compiler meets;
the database is looked up by that workload (see :meth:`.schedules.TunedSchedules.query_static`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tvm import tirx

STATIC_KERNEL = "static_op"  # the ``kernel`` of static-operator tasks in manifests


def clean_func(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """``func`` without its symbol name (the workload is the same whatever the function is called)."""
    return func.without_attr("global_symbol") if func.attrs and "global_symbol" in func.attrs else func


def static_key(func: tirx.PrimFunc) -> str:
    """Stable key of a static operator: a hash of its workload (structural, names ignored)."""
    from .database import workload_hash, workload_mod

    return f"{STATIC_KERNEL}:{workload_hash(workload_mod(clean_func(func)))}"


@dataclass(frozen=True)
class StaticTask:
    """A static operator to tune (same interface as :class:`~.tasks.Task`)."""

    op: str
    prim: tirx.PrimFunc = field(compare=False, repr=False)
    kernel: str = STATIC_KERNEL
    P: None = None
    num_patches: None = None
    index_args: tuple = ()

    @property
    def params(self) -> dict:
        return {"op": self.op}

    @property
    def key(self) -> str:
        return static_key(self.prim)

    @property
    def name(self) -> str:
        return f"{self.op}_{self.key[-8:]}"

    def func(self) -> tirx.PrimFunc:
        return clean_func(self.prim)

    def to_json(self) -> dict:
        return {"key": self.key, "name": self.name, "kernel": self.kernel, "params": self.params, "P": None,
                "num_patches": None}


def _has_reduction(func: tirx.PrimFunc) -> bool:
    from tvm import s_tir

    try:
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
    except Exception:  # noqa: BLE001 - not block-style TensorIR: nothing MetaSchedule could tune
        return False
    return any(int(iv.iter_type) == tirx.IterVar.CommReduce for b in blocks for iv in sch.get(b).iter_vars)


def static_op_tasks(model, target, fusion: str = "all") -> list[StaticTask]:
    """The static operators of ``model`` (a :class:`~lasnet_tvm.models.LASNet`) worth tuning for ``target``:
    the legalized PrimFuncs with a reduction (convolution, pooling, matmul), not the LAS kernels."""

    from ..compiler.export import export_model
    from ..compiler.importer import import_exported
    from ..compiler.passes.lower_las_blocks import KERNEL_ATTR
    from ..compiler.pipeline import apply_passes, lasnet_passes

    passes = lasnet_passes(target, fusion, False, None)
    upto = next(i for i, p in enumerate(passes) if p.info.name == "ApplyTunedSchedules")
    mod = apply_passes(import_exported(export_model(model.eval())), passes[:upto])
    seen: dict[str, StaticTask] = {}
    for gv, func in sorted(mod.functions_items(), key=lambda kv: kv[0].name_hint):
        if not isinstance(func, tirx.PrimFunc) or (func.attrs and KERNEL_ATTR in func.attrs):
            continue
        if _has_reduction(func):
            t = StaticTask(gv.name_hint, func)
            seen.setdefault(t.key, t)
    return list(seen.values())
