"""ScheduleStaticOps: default schedules for the legalized static operators (stem, pooling, classifier).

CUDA: convolutions (the stem) a tiled schedule with shared-memory staging and register tiles, everything else
dlight's GPU rules (GEMV, reduction, fallback); CPU: convolutions (the stem) get a register-tiled,
vectorized schedule and every other loop nest gets its leading loops fused and run in parallel. Functions
already scheduled (LAS kernels, operators given a tuned schedule by ``ApplyTunedSchedules``) are left alone.
"""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl

from ...kernels.shapes import MAX_TILE_FLOATS, largest_divisor
from ...targets import target_kind
from . import schedule_each


def _schedule_conv_cpu(sch: s_tir.Schedule, block) -> None:
    """A legalized NCHW convolution (the stem): the weights repacked once per call ``[F // tf, C, KH, KW, tf]``
    so that a tile of ``tf`` output channels (16-32, vectorized) reads contiguous vectors, times up to 7-8
    columns, each input pixel broadcast; (channel tiles x rows) in parallel, the accumulator tile in a small
    stack buffer laid out channel-innermost."""
    n, ff, yy, xx, rc, ry, rx = sch.get_loops(block)
    F, X = int(sch.get(ff).extent), int(sch.get(xx).extent)
    tf = next((t for t in (32, 16) if F % t == 0), largest_divisor(F, 16))
    tx = largest_divisor(X, max(1, MAX_TILE_FLOATS // tf))
    weight = next(i for i, r in enumerate(sch.get(block).reads)
                  if len(r.source.shape) == 4 and int(r.source.shape[0]) == F and "pad" not in r.source.name)
    wl = sch.cache_read(block, weight, "global")
    sch.transform_layout(wl, ("write", 0), lambda f, c, h, w: (f // tf, c, h, w, f % tf))
    acc = sch.cache_write(block, 0, "global")
    sch.transform_layout(block, ("write", 0), lambda b, f, y, x: (b, f // tf, y, x, f % tf))
    ff_o, ff_i = sch.split(ff, [None, tf])
    xx_o, xx_i = sch.split(xx, [None, tx])
    sch.reorder(n, ff_o, yy, xx_o, rc, ry, rx, xx_i, ff_i)
    sch.parallel(sch.fuse(n, ff_o, yy))
    sch.reverse_compute_at(acc, xx_o)
    sch.unroll(xx_i)
    sch.vectorize(ff_i)
    sch.decompose_reduction(block, rc)
    _inline_epilogue(sch, acc)


def _inline_epilogue(sch: s_tir.Schedule, producer) -> None:
    """Fold the elementwise chain that consumes ``producer`` (bias add, ReLU) into it, one consumer at a time,
    so that the output is written once instead of passing through memory for every operator."""
    while True:
        consumers = sch.get_consumers(producer)
        if len(consumers) != 1:
            return
        try:
            sch.reverse_compute_inline(consumers[0])
        except Exception:  # noqa: BLE001 - not elementwise (or not inlinable): keep it as its own loop nest
            return


def _schedule_gemv_cpu(sch: s_tir.Schedule, block) -> None:
    """A legalized ``[1, K] x [K, N]`` matmul (the classifier): the reduction outermost, the ``N`` outputs of a
    chunk vectorized, so that the weights stream row by row; chunks in parallel."""
    i, j, k = sch.get_loops(block)
    if int(sch.get(i).extent) != 1:
        raise ValueError("not a matrix-vector product")
    n = int(sch.get(j).extent)
    j_o, j_i = sch.split(j, [None, largest_divisor(n, 128)])
    sch.reorder(i, j_o, k, j_i)
    sch.parallel(j_o)
    sch.vectorize(j_i)
    sch.decompose_reduction(block, k)


def _parallelize_cpu(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """Convolutions get :func:`_schedule_conv_cpu` (their elementwise epilogue folded in), a matrix-vector
    product :func:`_schedule_gemv_cpu`; every other top-level loop nest gets its two (else one) leading loops
    fused and run in parallel.

    The schedule primitives refuse a reduction or otherwise unsafe loop, which then stays serial.
    """
    sch = s_tir.Schedule(func)
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        try:
            name = sch.get(block).name_hint
        except Exception:  # noqa: BLE001 - inlined into the operator before it
            continue
        special = (_schedule_conv_cpu if name.startswith("conv2d_nchw") and len(sch.get_loops(block)) == 7
                   else _schedule_gemv_cpu if name == "matmul" and len(sch.get_loops(block)) == 3 else None)
        if special is not None:
            try:
                special(sch, block)
                continue
            except Exception:  # noqa: BLE001 - an unusual operator keeps the generic schedule
                pass
        loops = sch.get_loops(block)
        for n in (2, 1):
            if len(loops) < n:
                continue
            try:
                sch.parallel(sch.fuse(*loops[:n]) if n > 1 else loops[0])
                break
            except Exception:  # noqa: BLE001 - tvm raises ScheduleError subclasses; try a shorter prefix
                continue
    return sch.mod["main"]


def _schedule_conv_cuda(sch: s_tir.Schedule, block) -> None:
    """A legalized NCHW convolution (the stem) on CUDA as a tiled direct convolution: a thread block computes
    ``ft*fi`` output channels x ``yt`` rows x ``xt*xi`` columns, each of its ``ft*yt*xt`` threads an
    ``fi x xi`` register tile; per step of ``rci`` input channels the padded input window and the weights of
    the tile are staged in shared memory by all threads together; the elementwise epilogue (bias, ReLU) is
    applied when the register tile is written back."""
    n, ff, yy, xx, rc, ry, rx = sch.get_loops(block)
    F, Y, X, C = (int(sch.get(loop).extent) for loop in (ff, yy, xx, rc))
    fi = largest_divisor(F, 4)
    ft = largest_divisor(F // fi, 8)
    xi = largest_divisor(X, 2)
    xt = largest_divisor(X // xi, 8)
    yt = largest_divisor(Y, max(1, 256 // (ft * xt)))
    threads = ft * yt * xt
    reads = [r.source for r in sch.get(block).reads]
    data_i = next(i for i, b in enumerate(reads) if len(b.shape) == 4 and "pad" in b.name)
    weight_i = next(i for i, b in enumerate(reads) if i != data_i and len(b.shape) == 4)
    out = sch.cache_write(block, 0, "local")
    fo, f_t, f_i = sch.split(ff, [None, ft, fi])
    yo, y_t = sch.split(yy, [None, yt])
    xo, x_t, x_i = sch.split(xx, [None, xt, xi])
    rco, rci = sch.split(rc, [None, largest_divisor(C, 4)])
    sch.reorder(n, fo, yo, xo, f_t, y_t, x_t, rco, rci, ry, rx, f_i, x_i)
    sch.bind(sch.fuse(n, fo, yo, xo), "blockIdx.x")
    tx = sch.fuse(f_t, y_t, x_t)
    sch.bind(tx, "threadIdx.x")
    sch.reverse_compute_at(out, tx)
    for index in (data_i, weight_i):
        shared = sch.cache_read(block, index, "shared")
        sch.compute_at(shared, rco)
        loops = sch.get_loops(shared)[3:]  # below the thread block, thread and channel-step loops
        _, t = sch.split(sch.fuse(*loops), [None, threads])
        sch.bind(t, "threadIdx.x")
        if index == data_i:  # the padding computed while staging
            sch.compute_inline(sch.get_producers(shared)[0])
    for loop in (f_i, x_i):
        sch.unroll(loop)
    _inline_epilogue(sch, out)


def _schedule_cuda(func: tirx.PrimFunc, target) -> tirx.PrimFunc:
    """Convolutions get :func:`_schedule_conv_cuda`; everything else (and a convolution it cannot schedule)
    dlight's GPU rules."""
    sch = s_tir.Schedule(func)
    convs = [b for b in sch.get_child_blocks(sch.get_sblock("root"))
             if sch.get(b).name_hint.startswith("conv2d_nchw") and len(sch.get_loops(b)) == 7]
    if convs:
        try:
            _schedule_conv_cuda(sch, convs[0])
            return sch.mod["main"]
        except Exception:  # noqa: BLE001 - an unusual convolution keeps dlight's schedule
            pass
    with target:
        return dl.ApplyDefaultSchedule(*_gpu_rules(target))(tvm.IRModule({"main": func}))["main"]


def _gpu_rules(target) -> list:
    # dlight's Matmul rule fails on the legalized stem convolution in TVM 0.27, and TVM's NVPTX backend
    # (LLVM 22) emits an invalid barrier intrinsic, so no rule that synchronizes threads there.
    rules = [dl.gpu.Fallback()]
    if target.kind.name == "cuda":
        rules = [dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction()] + rules
    return rules


def default_static_schedule(func: tirx.PrimFunc, target) -> tirx.PrimFunc:
    """``func`` (one unscheduled static operator) with the default schedule of this pass for ``target``."""
    if target_kind(target) == "cuda":
        return _schedule_cuda(func, target)
    return _parallelize_cpu(func)


@tvm.transform.module_pass(opt_level=0, name="ScheduleStaticOps")
class ScheduleStaticOps:
    """Schedules for unscheduled PrimFuncs (the static operators after legalization).

    Parameters
    ----------
    target : tvm.target.Target
    """

    def __init__(self, target):
        self.target = target

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        if target_kind(self.target) == "cuda":
            return schedule_each(mod, lambda func: _schedule_cuda(func, self.target))
        return schedule_each(mod, _parallelize_cpu)
