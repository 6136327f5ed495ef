"""The CUDA schedules checked without a GPU: their device code through nvcc/ptxas (registers, shared memory,
spills, register-tile size), and the very same scheduled TensorIR run on the CPU with its GPU thread loops made
serial, so that the kernels' tests against PyTorch also cover what the CUDA schedules do to the compute."""

from __future__ import annotations

import functools
import re
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace

import tvm

from lasnet_tvm import kernels as K
from lasnet_tvm.targets import cuda_source

_THREAD_LOOP = re.compile(r'T\.thread_binding\((.+?), thread="[\w.]+"\)')
_GPU_SCOPE = re.compile(r', scope="(?:shared|local)"')


def serial_module(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` (scheduled for CUDA) with every thread-bound loop serial and shared/local buffers global: the
    same TensorIR, which the CPU can run. Each (block, thread) pair then runs in turn and a cooperative load
    fills the whole tile, so the outputs are the ones the GPU computes."""
    text = _GPU_SCOPE.sub("", _THREAD_LOOP.sub(r"T.serial(\1)", mod.script()))
    return tvm.script.from_source(text)


@functools.lru_cache(maxsize=None)
def cuda_schedule_on_cpu(name: str, **params):
    """Kernel ``name(**params)`` under its CUDA schedule, compiled for this CPU (threads serial)."""
    mod = K.get(name).schedule_cuda(K.builder(name)(**params), **params).mod
    ex = tvm.compile(serial_module(mod), target="llvm")
    return ex["main"]


def ptxas_report(name: str, arch: str = "sm_90", **params) -> SimpleNamespace:
    """Build kernel ``name(**params)`` under its CUDA schedule with nvcc and read ptxas' report of its conv kernel
    (the one with the largest register tile): ``registers``, ``shared_bytes``, ``spill_bytes`` and
    ``outputs_per_thread`` (elements of the accumulator array each thread holds)."""
    mod = K.get(name).schedule_cuda(K.builder(name)(**params), **params).mod
    src = cuda_source(mod, arch)
    with tempfile.TemporaryDirectory() as d:
        cu = Path(d) / "k.cu"
        cu.write_text(src)
        r = subprocess.run(["nvcc", "-cubin", f"-arch={arch}", "-Xptxas", "-v", "-o", str(Path(d) / "k.cubin"),
                            str(cu)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    kernels = {}
    for m in re.finditer(r"Compiling entry function '(\w+)'.*?Used (\d+) registers.*?(?:(\d+) bytes smem|\n)",
                         r.stderr, re.S):
        kernels[m.group(1)] = dict(registers=int(m.group(2)), shared_bytes=int(m.group(3) or 0))
    for m in re.finditer(r"Function properties for (\w+)\n\s*(\d+) bytes stack frame, (\d+) bytes spill stores, "
                         r"(\d+) bytes spill loads", r.stderr):
        kernels.setdefault(m.group(1), {})["spill_bytes"] = int(m.group(3)) + int(m.group(4))
    # the accumulator of each kernel: `float acc_local_ptr[N];` in its body
    bodies = re.split(r'extern "C" __global__', src)[1:]
    tiles = {}
    for body in bodies:
        kname = re.search(r"(\w+)\((?!\d)", body.replace("__launch_bounds__(", "")).group(1)
        sizes = [int(n) for n in re.findall(r"float \w*local\w*\[(\d+)\];", body)]
        tiles[kname] = max(sizes, default=1)
    conv = max(tiles, key=tiles.get)
    return SimpleNamespace(kernel=conv, outputs_per_thread=tiles[conv], **kernels[conv], kernels=kernels)
