"""Helpers of the CUDA tests that need no GPU: the host side of a module lowered for a CUDA target."""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import tirx
from tvm.tirx.build import split_host_device_mods


def host_buffer_accesses(mod: tvm.IRModule, target) -> tuple[set, int]:
    """Lower the TIR functions of ``mod`` for ``target`` (a CUDA target) as ``tvm.compile`` does and split them
    into host and device code; returns the names of the buffers that the host code loads from or stores to
    (every buffer is in device memory: the host must only launch kernels) and the number of device modules."""
    target = tvm.target.Target(target).with_host(tvm.target.Target("llvm"))
    tir = tvm.IRModule({gv: f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)})
    tir = tirx.transform.BindTarget(target)(tir)
    pipeline, _, _ = tirx.get_default_tir_pipeline(target)
    host, device = split_host_device_mods(pipeline(tir))
    found = set()

    def visit(node, visitor):
        kind = type(node).__name__
        if kind == "BufferStore":
            found.add(str(node.buffer.name))
        elif kind in ("BufferLoad", "TensorLoad"):  # TVM 0.27 prints loads as TensorLoad (a ``source`` var)
            found.add(str(node.buffer.name if kind == "BufferLoad" else node.source))
        visitor.default_visit(node)

    for func in host.functions.values():
        tvm_ffi.structural_visit(func.body, [(object, visit)])
    return found, len(device)
