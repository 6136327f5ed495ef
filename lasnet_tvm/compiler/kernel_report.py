"""The launch geometry of a scheduled module's GPU kernels, read from its TensorIR (no GPU, no compiler).

:func:`launch_report` walks every scheduled PrimFunc and returns, per device kernel (named as TVM names them in
the library: ``<func>_kernel``, ``<func>_kernel_1``, ...), its grid and block extents as expressions of the
function's symbolic sizes (the patch count ``P`` of the LAS kernels) and its outputs per thread: the product of
the extents of the loops each thread runs over the output's spatial axes (a register tile of 4 x 4 outputs
gives 16; one thread per output gives 1).
"""

from __future__ import annotations

import re

import tvm
from tvm.sym.analyzer import Analyzer
from tvm.tirx import For, ForKind
from tvm.tirx.analysis import undefined_vars

_GRID = ("blockIdx.x", "blockIdx.y", "blockIdx.z")
_BLOCK = ("threadIdx.x", "threadIdx.y", "threadIdx.z")


def _children(stmt):
    """The statements directly inside ``stmt`` (loops, sequences, blocks, branches, lets)."""
    from tvm.s_tir import SBlock, SBlockRealize

    if isinstance(stmt, SBlockRealize):
        return [stmt.block]
    if isinstance(stmt, SBlock):
        return [s for s in (stmt.init, stmt.body) if s is not None]
    seq = getattr(stmt, "seq", None)
    if seq is not None:
        return list(seq)
    out = [getattr(stmt, a, None) for a in ("body", "then_case", "else_case")]
    return [s for s in out if isinstance(s, tvm.tirx.Stmt)]


class _Kernel:
    def __init__(self):
        self.extents: dict[str, object] = {}
        self.outputs_per_thread = 1
        self.reduction = False  # a block with a reduction axis (a convolution or a matmul accumulates)


def _product(exprs):
    out = 1
    for e in exprs:
        out = out * e
    return out


def _walk(stmt, kernels: list, current: _Kernel | None, loops: list) -> None:
    from tvm.s_tir import SBlockRealize

    if isinstance(stmt, For) and stmt.kind == ForKind.THREAD_BINDING and stmt.thread_binding is not None:
        tag = str(stmt.thread_binding.thread_tag)
        if current is None:
            current = _Kernel()
            kernels.append(current)
        prev = current.extents.get(tag)  # sibling loops bound to one thread axis share it: the launch takes the max
        current.extents[tag] = stmt.extent if prev is None else tvm.tirx.max(prev, stmt.extent)
        for s in _children(stmt):
            _walk(s, kernels, current, loops)
        return
    if isinstance(stmt, For):
        for s in _children(stmt):
            _walk(s, kernels, current, loops + [stmt] if current is not None else loops)
        return
    if isinstance(stmt, SBlockRealize) and current is not None:
        block = stmt.block
        current.reduction |= any(int(iv.iter_type) == 2 for iv in block.iter_vars)  # IterVar.CommReduce
        if any(region.source.scope() == "global" for region in block.writes):
            spatial = [v for iv, v in zip(block.iter_vars, stmt.iter_values) if int(iv.iter_type) == 0]
            used = {var for v in spatial for var in undefined_vars(v)}
            tile = _product(loop.extent for loop in loops if loop.loop_var in used)
            n = Analyzer().simplify(tile)
            if isinstance(n, tvm.tirx.IntImm):
                current.outputs_per_thread = max(current.outputs_per_thread, int(n))
    for s in _children(stmt):
        _walk(s, kernels, current, loops)


def _dims(extents: dict, tags, rename: dict) -> list[str]:
    ana = Analyzer()
    out = []
    for t in tags:
        e = ana.simplify(extents[t]) if t in extents else 1
        text = str(int(e.value)) if isinstance(e, tvm.tirx.IntImm) else str(e)
        for old, new in rename.items():
            text = re.sub(rf"\b{re.escape(old)}\b", new, text)
        out.append(text)
    return out


def launch_report(mod: tvm.IRModule) -> dict[str, dict]:
    """``{kernel name: {"grid": [x, y, z], "block": [x, y, z], "outputs_per_thread": n, "reduction": bool}}`` of every GPU kernel
    in the PrimFuncs of ``mod`` (extents as expressions of the functions' symbolic sizes)."""
    report = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        kernels: list[_Kernel] = []
        _walk(func.body, kernels, None, [])
        sizes = {str(v) for k in kernels for e in k.extents.values() for v in undefined_vars(e)}
        rename = {sizes.pop(): "P"} if len(sizes) == 1 else {}  # the one symbolic size: the patch count
        for i, k in enumerate(kernels):
            name = f"{gv.name_hint}_kernel" + (f"_{i}" if i else "")
            report[name] = {"grid": _dims(k.extents, _GRID, rename), "block": _dims(k.extents, _BLOCK, rename),
                            "outputs_per_thread": k.outputs_per_thread, "reduction": k.reduction}
    return report
