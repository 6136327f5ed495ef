"""Tuning tasks: the distinct (kernel, params) of a LAS network, as PrimFuncs MetaSchedule can tune.

Kernels with a data-dependent number of patches ``P`` are specialized at ``P = round(rate * g * g)`` (at
least 1); their int32 index arguments are filled with valid, distinct, sorted patch indices by
:class:`IndexArgAllocator` (the default runner fills them with random values and the gather reads out of
bounds).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from tvm import tirx

from .. import kernels as K
from ..block_plan import block_plan


@dataclass(frozen=True)
class Task:
    """One tuning task.

    Attributes
    ----------
    kernel : str
        Kernel name (one of :data:`lasnet_tvm.kernels.KERNELS`).
    params : dict
        Builder parameters of the kernel.
    P : int or None
        Number of patches the symbolic extent is specialized at (None: the kernel has no symbolic extent).
    num_patches : int or None
        ``g * g``, the largest valid patch index plus one (None for static kernels).
    """

    kernel: str
    params: dict
    P: int | None = None
    num_patches: int | None = None
    index_args: tuple = field(default=())

    @property
    def key(self) -> str:
        """Stable identifier of (kernel, params) (P excluded: one record set serves every P)."""
        return task_key(self.kernel, self.params)

    @property
    def name(self) -> str:
        return f"{self.kernel}_{self.key[-8:]}"

    def func(self) -> tirx.PrimFunc:
        """The PrimFunc MetaSchedule tunes (specialized at ``P`` when the kernel has a symbolic extent)."""
        f = K.builder(self.kernel)(**self.params)
        return specialize(f, self.P) if self.P is not None else f

    def to_json(self) -> dict:
        return {"key": self.key, "name": self.name, "kernel": self.kernel, "params": self.params, "P": self.P,
                "num_patches": self.num_patches}


def task_key(kernel: str, params: dict) -> str:
    text = json.dumps({"kernel": kernel, "params": params}, sort_keys=True)
    return f"{kernel}:{hashlib.sha1(text.encode()).hexdigest()[:16]}"


def symbolic_vars(func: tirx.PrimFunc) -> list:
    """The symbolic (non-constant) extents of ``func``'s parameter shapes."""
    out = []
    for p in func.params:
        for s in getattr(p, "shape", None) or ():
            if not isinstance(s, tirx.IntImm) and not any(s.same_as(v) for v in out):
                out.append(s)
    return out


def specialize(func: tirx.PrimFunc, value: int) -> tirx.PrimFunc:
    """Pin the (single) symbolic extent of ``func`` to ``value``."""
    for p in func.params:
        shape = getattr(p, "shape", None) or ()
        if any(not isinstance(s, tirx.IntImm) for s in shape):
            new_shape = [value if not isinstance(s, tirx.IntImm) else int(s) for s in shape]
            return func.specialize({p: tirx.decl_buffer(new_shape, p.dtype, p.name)})
    return func


#: Name of the int32 argument of a patch kernel that holds the active patch indices.
INDEX_ARG = "idx"


def _task_of(kernel: str, params: dict, grid: int, rate: float) -> Task:
    """The task of ``kernel(**params)``: a kernel whose shapes hold the symbolic patch count ``P`` is tuned at
    ``P = round(rate * grid^2)``, its :data:`INDEX_ARG` filled with valid patch indices."""
    func = K.builder(kernel)(**params)
    if not symbolic_vars(func):
        return Task(kernel, dict(params))
    gg = grid * grid
    P = max(1, min(gg, round(rate * gg)))
    index_args = tuple(p.name for p in func.params if p.name == INDEX_ARG)
    return Task(kernel, dict(params), P, gg, index_args)


def tasks_of_spec(spec, rate: float = 0.5, fusion: str = "all", static: bool = True) -> list[Task]:
    """Distinct tasks over the blocks of an :class:`~lasnet_tvm.archs.ArchSpec` (dynamic and, with
    ``static``, the dense counterparts): the kernels ``compile`` builds, residuals added in place as in a
    network (see :func:`~lasnet_tvm.block_plan.block_plan`), so that the tuned workloads are those it looks up."""
    seen: dict[str, Task] = {}
    for b in spec.blocks:
        steps = list(block_plan(b, fusion, inplace_residual=True))
        steps += list(block_plan(b, static=True)) if static else []
        for st in steps:
            t = _task_of(st.kernel, st.params, b.grid, rate)
            seen.setdefault(t.key, t)
    return list(seen.values())


def tasks_of_block(block, rate: float = 0.5, fusion: str = "all", static: bool = False) -> list[Task]:
    """Distinct tasks of one :class:`~lasnet_tvm.archs.BlockSpec`."""

    class _One:
        blocks = (block,)

    return tasks_of_spec(_One, rate, fusion, static)


def index_arg_layout(task: Task) -> dict:
    """``{argument position: g*g}`` for the index arguments of ``task``."""
    if not task.index_args:
        return {}
    f = task.func()
    return {i: task.num_patches for i, p in enumerate(f.params) if p.name in task.index_args}


def args_signature(args_info) -> str:
    """A hashable text of a runner's ``args_info`` (list of ``["TENSOR", dtype, shape]``)."""
    return json.dumps([[str(a[1]), [int(s) for s in a[2]]] for a in args_info])


def task_signature(task: Task) -> str:
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    return args_signature([a.as_json() for a in ArgInfo.from_prim_func(task.func())])


def fill_arguments(args_info, layouts: dict, seed: int = 0) -> list:
    """Numpy arrays for one call: floats in [-1, 1], index arguments ``floor(i * g*g / P)`` (distinct,
    sorted, valid), other int32 arrays zero."""
    import numpy as np

    rng = np.random.default_rng(seed)
    layout = layouts.get(args_signature(args_info), {})
    out = []
    for pos, (_, dtype, shape) in enumerate(args_info):
        shape = [int(s) for s in shape]
        if pos in layout:
            n = shape[0]
            a = (np.arange(n, dtype=np.int64) * int(layout[pos]) // max(n, 1)).astype(dtype)
        elif str(dtype).startswith("int"):
            a = np.zeros(shape, dtype=dtype)
        else:
            a = rng.uniform(-1, 1, size=shape).astype(dtype)
        out.append(a)
    return out


class IndexArgAllocator:
    """``f_alloc_argument`` for :class:`ms.runner.LocalRunner`: valid patch indices for the index arguments.

    Parameters
    ----------
    layouts : dict
        ``args_signature -> {position: g*g}`` for every task with index arguments (picklable: the runner
        sends it to its worker processes).
    """

    def __init__(self, layouts: dict):
        self.layouts = dict(layouts)

    def __call__(self, device, args_info, alloc_repeat):
        import tvm

        return [[tvm.runtime.tensor(a, device) for a in fill_arguments(args_info, self.layouts, r)]
                for r in range(alloc_repeat)]


class RPCIndexArgAllocator(IndexArgAllocator):
    """``f_alloc_argument`` for :class:`ms.runner.RPCRunner` (arrays copied to the remote device)."""

    def __call__(self, remote, device, args_info, alloc_repeat):  # noqa: D102
        import tvm

        out = []
        for r in range(alloc_repeat):
            args = []
            for a in fill_arguments(args_info, self.layouts, r):
                t = tvm.runtime.empty(a.shape, str(a.dtype), device)
                t.copyfrom(a)
                args.append(t)
            out.append(args)
        return out


def allocator_layouts(tasks) -> dict:
    """Index layouts of ``tasks`` keyed by argument signature (the smallest g*g wins on a clash)."""
    layouts: dict = {}
    for t in tasks:
        lay = index_arg_layout(t)
        if lay:
            sig = task_signature(t)
            cur = layouts.setdefault(sig, {})
            for pos, gg in lay.items():
                cur[pos] = min(gg, cur.get(pos, gg))
    return layouts
