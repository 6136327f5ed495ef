"""LowerLASBlocks: each call of a LAS block function -> the block's TensorIR kernels (``call_tir``).

Matches ``las_block_k(x, w...)`` calls (functions carrying the ``lasnet.spec`` attribute, made by the
importer) whose weights are constants, and produces the kernel sequence of :func:`~lasnet_tvm.block_plan.
block_plan` with the weights pre-arranged in the kernels' layouts. The block functions are removed afterwards.

Two ways to size the patch buffers, one compiled module serving any activation rate in both:

- default: the number of active patches ``P`` flows from the masker's ``count`` tensor into a symbolic shape
  (``tensor_to_shape`` + ``match_cast``), a read of the count by the host per block, free on the CPU;
- ``bounded=True`` (the CUDA form): every patch buffer is sized for all ``g*g`` patches and the patch kernels
  take the masker's ``count`` as an input (:func:`lasnet_tvm.kernels._bounded.bounded`): threads of inactive
  patches do nothing, the host never reads the count, and ``main`` can be captured in a CUDA graph.
"""

from __future__ import annotations

import json

import numpy as np
import torch
import tvm
from tvm import relax, tirx

from ... import kernels as K
from ...block_plan import Fusion, MaskerPlacement, block_plan, prepared_weights
from ...block_runtime import uses_patches
from ...kernels._bounded import bounded
from ...kernels.shapes import ceil_div
from ..export import folded_from_weights, spec_from_ints
from ..importer import SPEC_ATTR

KERNEL_ATTR = "lasnet.kernel"  # kernel module name on every PrimFunc this pass adds
PARAMS_ATTR = "lasnet.params"  # its builder parameters, JSON
BOUNDED_ATTR = "lasnet.bounded"  # on patch kernels in bounded form: their number of inputs before ``count``


def unbounded(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """A tagged kernel as its builder makes it: a bounded kernel without its ``count`` input and guards (to be
    scheduled, then bounded again by :func:`rebound`); any other function as it is."""
    if func.attrs is None or BOUNDED_ATTR not in func.attrs:
        return func
    bare = K.builder(str(func.attrs[KERNEL_ATTR]))(**json.loads(str(func.attrs[PARAMS_ATTR])))
    return bare.with_attrs({k: v for k, v in dict(func.attrs).items() if k != BOUNDED_ATTR})


def rebound(original: tirx.PrimFunc, scheduled: tirx.PrimFunc | None) -> tirx.PrimFunc | None:
    """``scheduled`` (the schedule of ``unbounded(original)``) in the bounded form of ``original``, if it has one."""
    if scheduled is None or original.attrs is None or BOUNDED_ATTR not in original.attrs:
        return scheduled
    return bounded(scheduled, int(original.attrs[BOUNDED_ATTR])).with_attr(BOUNDED_ATTR, original.attrs[BOUNDED_ATTR])


def _tagged(func: tirx.PrimFunc, kernel: str, params: dict) -> tirx.PrimFunc:
    # op_pattern 8 (opaque): operator fusion must not merge a kernel into another PrimFunc
    return func.with_attrs({KERNEL_ATTR: kernel, PARAMS_ATTR: json.dumps(params, sort_keys=True), "op_pattern": 8})


@tvm.transform.module_pass(opt_level=0, name="LowerLASBlocks")
class LowerLASBlocks:
    """Rewrite LAS block calls into kernels.

    Parameters
    ----------
    fusion : Fusion or its name
        Fusion level of the dynamic blocks (paper Table 1).
    static : bool
        Lower every block to the dense static kernels instead (the same-compiler baseline).
    bounded : bool
        Size the patch buffers for all patches and pass the count to the kernels (no host read of the count).
    masker : MaskerPlacement, its name, or a sequence of them
        Masker placement of every dynamic block, or of each block in the network's order
        (:class:`~lasnet_tvm.block_plan.MaskerPlacement`; ``separate`` needs fusion ``all``).
    """

    def __init__(self, fusion: Fusion | str = Fusion.ALL, static: bool = False, bounded: bool = False,
                 masker=MaskerPlacement.FUSED):
        self.fusion, self.static, self.bounded = Fusion.parse(fusion), static, bounded
        self.masker = (MaskerPlacement.parse(masker) if isinstance(masker, str)
                       else tuple(MaskerPlacement.parse(m) for m in masker))

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        return _Lowerer(mod, self.fusion, self.static, self.bounded, self.masker).run()


@relax.expr_functor.mutator
class _Lowerer(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, fusion: Fusion, static: bool, bounded: bool, masker):
        super().__init__(mod)
        self.mod_, self.fusion, self.static, self.bounded, self.masker = mod, fusion, static, bounded, masker
        self.kernels: dict[str, relax.GlobalVar] = {}
        self.bounds: dict[str, int] = {}  # patch-count variable -> its upper bound (all patches)

    def _is_block(self, gv) -> bool:
        if not isinstance(gv, relax.GlobalVar) or gv not in self.mod_.get_global_vars():
            return False
        func = self.mod_[gv]
        return isinstance(func, relax.Function) and func.attrs is not None and SPEC_ATTR in func.attrs

    def run(self) -> tvm.IRModule:
        blocks = [gv for gv in self.mod_.get_global_vars() if self._is_block(gv)]
        for gv, func in self.mod_.functions_items():
            if isinstance(func, relax.Function) and gv not in blocks:
                self.bounds = {}
                new = self.visit_expr(func)
                if self.bounds:  # lets memory planning allocate patch buffers statically, at their maximum
                    upper = dict(func.attrs.get("tir_var_upper_bound", {}) if func.attrs else {}, **self.bounds)
                    lower = dict(func.attrs.get("tir_var_lower_bound", {}) if func.attrs else {},
                                 **{k: 0 for k in self.bounds})
                    new = new.with_attr("tir_var_upper_bound", upper).with_attr("tir_var_lower_bound", lower)
                self.builder_.update_func(gv, new)
        mod = self.builder_.get()
        for gv in blocks:
            mod = _without(mod, gv)
        return mod

    def _kernel(self, name: str, params: dict, count_after: int | None = None) -> relax.GlobalVar:
        """The kernel's function; with ``count_after``, bounded with the count after that many inputs."""
        key = name + json.dumps(params, sort_keys=True) + str(count_after)
        if key not in self.kernels:
            func = K.builder(name)(**params)
            gname = f"{name}_" + "_".join(f"{v}" for _, v in sorted(params.items())).replace("True", "1").replace("False", "0")
            if count_after is not None:
                func = bounded(func, count_after).with_attr(BOUNDED_ATTR, count_after)
                gname += "_bounded"
            # parameter values alone can name two kernels alike (relu=True vs residual=True): number the later one
            taken = {gv.name_hint for gv in self.kernels.values()}
            base, n = gname, 1
            while gname in taken:
                gname, n = f"{base}_v{n}", n + 1
            func = _tagged(func, name, params).with_attr("global_symbol", gname)
            self.kernels[key] = self.builder_.add_func(func, gname)
        return self.kernels[key]

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not self._is_block(call.op):
            return call
        ints = [int(v) for v in self.mod_[call.op].attrs[SPEC_ATTR]]
        index, spec = spec_from_ints(ints)
        if not all(isinstance(a, tvm.ir.expr.Constant) for a in call.args[1:]):
            raise ValueError(f"LowerLASBlocks: block {call.op.name_hint} has non-constant weights")
        ws = [torch.from_numpy(a.value.numpy()) for a in call.args[1:]]
        weights = prepared_weights(folded_from_weights(spec, ws))
        return self._emit_block(index, spec, call.args[0], weights)

    def _emit_block(self, index: int, s, x, weights) -> relax.Expr:
        bb = self.builder_
        env: dict[str, relax.Expr] = {"x": bb.emit(relax.op.reshape(x, (s.c_in, s.in_size, s.in_size)))}
        P = s.grid * s.grid if self.bounded else None
        # every block input is a ReLU output used by this block alone: residuals are added in place
        masker = self.masker if isinstance(self.masker, MaskerPlacement) else self.masker[index]
        steps = block_plan(s, self.fusion, self.static, inplace_residual=True, masker=masker)
        shapes = {name: shape for st in steps for name, shape, _ in st.outputs}
        for step in steps:
            if P is None and uses_patches(step, shapes):  # the first kernel over the active patches
                P, env["idx"] = self._active_patches(env, s, f"P{index}")
            args = [env[n] if n in env else relax.const(weights[n]) for n in step.inputs]
            outs = [relax.TensorType([P if d == "P" else d for d in shape], dt) for _, shape, dt in step.outputs]
            count_after = None
            if self.bounded and uses_patches(step, shapes):
                count_after = len(args)
                args.append(env["count"])
            gv = self._kernel(step.kernel, step.params, count_after)
            if step.inplace:  # the first input is updated and becomes the output
                call = relax.call_tir_inplace(gv, args, 0, outs[0])
            else:
                call = relax.call_tir(gv, args, out_ty=outs if len(outs) > 1 else outs[0])
            res = bb.emit(call)
            for i, (name, _, _) in enumerate(step.outputs):
                env[name] = bb.emit(relax.TupleGetItem(res, i)) if len(outs) > 1 else res
            for (name, shape, _), ty in zip(step.outputs, outs):
                if name in step.zeroed:  # the kernel wrote the interior: zero the border in place
                    H = _interior(step)
                    border = self._kernel("zero_border", dict(C=shape[0], H=H, W=H, Hq=shape[1], Wq=shape[2]))
                    env[name] = bb.emit(relax.call_tir_inplace(border, [env[name]], 0, ty))
        y = bb.emit(relax.op.reshape(env["out"], (1, s.c_out, s.out_size, s.out_size)))
        G = s.grid * s.grid
        count = env.get("count", relax.const(np.array([G], dtype=np.int32)))
        mask = env.get("mask", relax.const(np.ones(G, dtype=np.int32)))
        return relax.Tuple([y, count, mask])

    def _active_patches(self, env, s, name: str):
        """``P`` (symbolic) from the masker's count, and the first ``P`` patch indices (a view, no copy)."""
        bb = self.builder_
        shape = bb.emit(relax.op.tensor_to_shape(env["count"]))
        P = tirx.Var(name, "int64")
        self.bounds[name] = s.grid * s.grid
        bb.match_cast(shape, relax.ShapeType([P]))
        idx = bb.emit(relax.op.memory.view(env["idx"], relax.ShapeExpr([P])))
        return P, idx


def _interior(step) -> int:
    """Side of the interior of a zero-bordered output of ``step`` (a ``conv1x1`` with ``pad_for`` or a padded
    ``masker_conv1x1``): the conv's output size, stored at offset 1."""
    H, stride = step.params["H"], step.params.get("stride", 1)
    return ceil_div(H, stride) if step.kernel == "conv1x1" else H


def _without(mod: tvm.IRModule, gv: relax.GlobalVar) -> tvm.IRModule:
    funcs = {g: f for g, f in mod.functions_items() if not g.same_as(gv)}
    return tvm.IRModule(funcs, attrs=mod.attrs)
