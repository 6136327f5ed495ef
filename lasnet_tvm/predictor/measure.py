"""Measure this machine and write a CPU profile (``lasnet-tvm profile-device``, ``--device local``).

* cores: the CPUs this process may run on (``sched_getaffinity``);
* clock: the maximum frequency from ``/sys`` (cpufreq) or ``/proc/cpuinfo``;
* lanes: SIMD FP32 width x FMA units from the CPU flags (AVX-512: 16 x 2, AVX2+FMA: 8 x 2, else 4 x 1);
* peak FP32: the toolkit's own dense conv1x1 kernel (default schedule), compiled with
  ``llvm -mcpu=<llvm_get_system_cpu()>``; ``efficiency.compute`` = measured / (cores x lanes x 2 x clock), at
  most 1 (a clock read below the turbo clock can make the kernel look faster than nominal);
* DRAM bandwidth: a parallel vectorized TVM copy of 2 x 64 MiB (read + write bytes counted);
* caches: ``/sys/devices/system/cpu/cpu0/cache`` (last level = on-chip global memory, L2 = PE-local memory).

The whole measurement takes a few seconds (compilation included).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LasnetError


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def cpu_flags() -> set[str]:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def simd_lanes(flags: set[str]) -> tuple[int, int]:
    """(FP32 SIMD width, FMA units) from CPU flags."""
    if "avx512f" in flags:
        return 16, 2
    if "avx2" in flags and "fma" in flags:
        return 8, 2
    if "asimd" in flags or "neon" in flags:
        return 4, 2
    return 4, 1


def clock_mhz() -> float:
    khz = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if khz.isdigit():
        return int(khz) / 1000.0
    mhz = [float(l.split(":")[1]) for l in _read("/proc/cpuinfo").splitlines() if l.startswith("cpu MHz")]
    return max(mhz) if mhz else 2000.0


def cache_sizes_kb() -> dict[int, float]:
    """Largest cache per level (data/unified), KiB, from /sys."""
    out: dict[int, float] = {}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for d in sorted(base.glob("index*")):
        if _read(str(d / "type")) == "Instruction":
            continue
        size, level = _read(str(d / "size")), _read(str(d / "level"))
        if not size or not level.isdigit():
            continue
        mult = {"K": 1, "M": 1024, "G": 1024 * 1024}.get(size[-1], 1 / 1024)
        kb = float(size.rstrip("KMG")) * mult
        out[int(level)] = max(out.get(int(level), 0.0), kb)
    return out


def _host_target() -> Any:
    import tvm

    cpu = str(tvm.target.codegen.llvm_get_system_cpu())
    return tvm.target.Target({"kind": "llvm", "mcpu": cpu}), {"kind": "llvm", "mcpu": cpu}


def measure_peak_gflops(repeat: int = 10) -> float:
    """FP32 GFLOP/s of the toolkit's dense conv1x1 kernel under its default schedule, compiled for this CPU
    (1024 -> 256 channels on 14 x 14, LAS-ResNet-50's stage-3 conv1): the rate our convolutions reach, which
    the profile's compute efficiency describes. Checked against numpy."""
    import tvm

    from ..block_runtime import compile_kernel_module
    from ..kernels.shapes import pack_weight_1x1

    c_in, c_out, size = 1024, 256, 14
    target, _ = _host_target()
    mod = compile_kernel_module("conv1x1", target, C_in=c_in, C_out=c_out, H=size, W=size, relu=False)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((c_in, size, size), dtype=np.float32)
    w = rng.standard_normal((c_out, c_in), dtype=np.float32) / np.float32(c_in**0.5)
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(a, dev) for a in (x, pack_weight_1x1(w), np.zeros(c_out, np.float32),
                                                  np.zeros((c_out, size, size), np.float32))]
    mod["main"](*args)
    if not np.allclose(args[-1].numpy(), np.einsum("oc,chw->ohw", w, x), rtol=1e-3, atol=1e-3):
        raise LasnetError("profile-device: the conv1x1 kernel computed wrong results")
    # the best of ``repeat`` samples of >= 50 ms each: a busy or frequency-scaling machine only slows samples down
    t = mod.time_evaluator("main", dev, number=1, repeat=repeat, min_repeat_ms=50)(*args).min
    return float(2.0 * c_in * c_out * size * size / t / 1e9)


def measure_dram_gbps(mib: int = 64, repeat: int = 5) -> float:
    """GB/s of a parallel, vectorized TVM copy of ``mib`` MiB (read + write counted)."""
    import tvm
    from tvm import te

    n = mib * 1024 * 1024 // 4
    A = te.placeholder((n,), name="A")
    B = te.compute((n,), lambda i: A[i], name="B")
    sch = tvm.s_tir.Schedule(te.create_prim_func([A, B]))
    (i,) = sch.get_loops(sch.get_sblock("B"))
    io, ii = sch.split(i, [None, 16])
    sch.parallel(io)
    sch.vectorize(ii)
    target, _ = _host_target()
    ex = tvm.compile(sch.mod, target=target)
    dev = tvm.cpu()
    a = tvm.runtime.tensor(np.ones(n, "float32"), dev)
    b = tvm.runtime.empty((n,), "float32", dev)
    t = ex.mod.time_evaluator(ex.mod.entry_name, dev, number=2, repeat=repeat)(a, b).min
    return float(2.0 * n * 4 / t / 1e9)


def tvm_threads() -> int:
    """The threads TVM runs a kernel with in this process: ``TVM_NUM_THREADS`` if set, else TVM's default (the
    physical cores, e.g. 1 on a VM of 2 hyperthreads). Starts TVM's thread pool, which reads the variable once."""
    import tvm

    return int(tvm.get_global_func("runtime.NumThreads")())


def measure_local() -> dict[str, Any]:
    """Measure this machine; returns the profile as a YAML-ready mapping.

    The profile's processing elements are the threads TVM runs kernels with here (:func:`tvm_threads`), which
    the peak and the copy bandwidth are measured with, so that the profile describes the kernels as they will
    run (set ``TVM_NUM_THREADS`` before measuring to describe another thread count). ``measured`` holds the raw
    figures, the CPUs and the load average before measuring (a busy machine measures low)."""
    t0 = time.time()
    load = os.getloadavg()[0]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = tvm_threads()
    width, fmas = simd_lanes(cpu_flags())
    lanes = width * fmas
    clock = clock_mhz()
    gflops = measure_peak_gflops()
    dram = measure_dram_gbps()
    caches = cache_sizes_kb()
    _, target = _host_target()
    nominal = 2.0 * threads * lanes * clock * 1e-3
    last = max(caches) if caches else 0
    return {
        "name": "local",
        "description": f"this machine ({platform.processor() or platform.machine()}, {cpus} CPUs, TVM on {threads} "
                       f"threads), measured by lasnet-tvm profile-device in {time.time() - t0:.1f} s",
        "kind": "cpu",
        "target": target,
        "pes": threads,
        "lanes": lanes,
        "clock_mhz": round(clock, 1),
        "dram_gbps": round(dram, 2),
        "onchip_gbps": round(4.0 * dram, 2),
        "pe_bytes_per_cycle": 64,
        "l2_kb": caches.get(last, 1024.0),
        "local_kb": caches.get(2, caches.get(1, 256.0)),
        "efficiency": {
            "compute": round(min(1.0, gflops / nominal), 4),
            "dram": 1.0,  # dram_gbps is the measured copy bandwidth
            "onchip": 0.8,
            "dram_half_bytes": 60,
            "onchip_half_bytes": 60,
            "launch_us": 5,
            "call_us": 1,
        },
        "measured": {"peak_gflops": round(gflops, 2), "copy_gbps": round(dram, 2),
                     "nominal_gflops": round(nominal, 2), "threads": threads, "cpus": cpus,
                     "load_average": round(load, 2)},
    }


