"""Patch kernels at their maximum size: every buffer sized for all ``g*g`` patches, the active count read on the
device.

A kernel over the active patches has a symbolic patch count ``P`` (the extent of ``idx`` and of the patch
buffers) that the host takes from the buffer shapes to size the loops and, on a GPU, the launch grid. Sizing
it from the masker's count would need a device-to-host copy per block. :func:`bounded` instead gives the
kernel one more input, ``count [1]`` (the masker's count, in device memory), and guards every block iteration
over patches with ``p < count[0]``: called with buffers of all ``g*g`` patches, the grid covers them all and the
threads of inactive patches load and store nothing (their on-chip compute, on stale tiles, is never stored). The compute of the active patches is unchanged.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import tirx
from tvm.s_tir.stmt import SBlockRealize


def patch_count_var(func: tirx.PrimFunc) -> tirx.Var | None:
    """The symbolic patch count of ``func`` (the one variable in its buffer shapes), None if it has none."""
    found = [v for p in func.params for d in p.shape if not isinstance(d, tirx.IntImm)
             for v in tirx.analysis.undefined_vars(d)]
    return found[0] if found else None


_ON_CHIP = ("local", "shared", "shared.dyn", "warp")


def _on_chip_only(block) -> bool:
    """True if ``block`` reads and writes only on-chip (register, shared) buffers, as the compute of a GPU
    schedule does on its staged tiles. Such a block needs no guard: what it computes for an inactive patch stays
    in its tile (the stores to device memory are guarded), and its guard would cost registers."""
    regions = list(block.reads) + list(block.writes)
    return bool(regions) and all(r.source.scope() in _ON_CHIP for r in regions)


def bounded(func: tirx.PrimFunc, n_inputs: int) -> tirx.PrimFunc:
    """``func`` with a ``count [1]`` int32 input after its ``n_inputs`` inputs, every block iteration whose
    iterator ranges over patches (a domain that depends on the patch count) predicated on ``p < count[0]``, except the ones that only touch on-chip tiles (see :func:`_on_chip_only`)."""
    P = patch_count_var(func)
    if P is None:
        raise ValueError("bounded: the kernel has no symbolic patch count")
    count = tirx.decl_buffer((1,), "int32", name="count")
    active = count[0]

    def on_realize(node, mutator):
        node = mutator.default_mutate(node)
        if _on_chip_only(node.block):  # computes on staged tiles: harmless for inactive patches, never stored
            return node
        pred = node.predicate
        for iv, value in zip(node.block.iter_vars, node.iter_values):
            if any(v.same_as(P) for v in tirx.analysis.undefined_vars(iv.dom.extent)):
                pred = tirx.And(pred, value < active)
        return node if pred.same_as(node.predicate) else SBlockRealize(node.iter_values, pred, node.block)

    body = tvm_ffi.structural_mutate(func.body, [(SBlockRealize, on_realize)])
    params = list(func.params[:n_inputs]) + [count] + list(func.params[n_inputs:])
    return tirx.PrimFunc(params, body, func.ret_type, func.attrs)
