"""Weights outside the library: the large constants of ``main`` become trailing parameters.

Applied after the LAS passes (so the weights are already folded and arranged in the kernels' layouts) and
before the build: ``main(x)`` becomes ``main(x, p0, ..., pN)`` and the weights are returned by name, in
parameter order, to be written beside the library (``.npz``) and passed at every call.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

MIN_ELEMENTS = 256  # smaller constants (masker biases, index tables) stay in the library


@relax.expr_functor.mutator
class _LiftConstants(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.vars: list[relax.Var] = []
        self.values: dict[str, np.ndarray] = {}

    def visit_generic_const_(self, const: relax.Constant) -> relax.Expr:
        value = const.value
        if not str(value.dtype).startswith("float") or int(np.prod(value.shape)) < MIN_ELEMENTS:
            return const
        name = f"p{len(self.vars)}"
        self.vars.append(relax.Var(name, const.ty))
        self.values[name] = value.numpy()
        return self.vars[-1]


def separate_params(mod: tvm.IRModule) -> tuple[tvm.IRModule, dict[str, np.ndarray]]:
    """``mod`` with ``main``'s large float constants as trailing parameters, and their values by name."""
    lifter = _LiftConstants(mod)
    main = mod["main"]
    body = lifter.visit_expr(main.body)
    func = relax.Function(list(main.params) + lifter.vars, body, main.ret_ty, main.is_pure, main.attrs)
    mod = mod.clone() if hasattr(mod, "clone") else tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
    mod["main"] = func
    return mod, lifter.values
