"""Building and measuring candidates: a persistent builder pool, local or RPC runners, the tracker check.

MetaSchedule's ``LocalBuilder`` starts fresh worker processes for every batch, and each imports
``tvm.s_tir.tensor_intrin`` (about a minute on a busy 2-core machine), so batches time out. The
:class:`PersistentBuilder` keeps its workers for the whole run and imports the tensor intrinsics only for
GPU targets.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from ..errors import LasnetError


def device_type(target) -> str:
    """The runtime device name of ``target`` (``"cpu"`` for llvm; TVM's runners reject ``"llvm"``)."""
    return "cpu" if target.kind.name in ("llvm", "c") else "cuda"


def build_artifact(mod, target) -> str:
    """Build ``mod`` for ``target`` into a tar artifact (runs in a builder worker); return its path."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    from tvm.support.tar import tar

    if target.kind.name not in ("llvm", "c"):
        import tvm.s_tir.tensor_intrin  # noqa: F401 - registers GPU tensor intrinsics

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    path = os.path.join(tempfile.mkdtemp(prefix="lasnet-build-"), "mod." + tar.output_format)
    tvm_build(mod, target=target).export_library(path, fcompile=tar)
    return path


@derived_object
class PersistentBuilder(ms.builder.PyBuilder):
    """A MetaSchedule builder whose worker processes live until :meth:`close`.

    Parameters
    ----------
    max_workers : int
        Worker processes (default: the CPU count).
    timeout_sec : float
        Seconds per build (a worker that exceeds it is killed and replaced).
    """

    def __init__(self, max_workers: int | None = None, timeout_sec: float = 120.0):
        from tvm.support.popen_pool import PopenPoolExecutor

        super().__init__()
        self.timeout_sec = timeout_sec
        self.pool = PopenPoolExecutor(max_workers=max_workers or os.cpu_count() or 1, timeout=timeout_sec)

    def build(self, build_inputs):  # noqa: D102
        from tvm.support.popen_pool import StatusKind

        out = []
        jobs = [(b.mod, b.target) for b in build_inputs]
        for res in self.pool.map_with_error_catching(lambda a: build_artifact(*a), jobs):
            if res.status == StatusKind.COMPLETE:
                out.append(ms.builder.BuilderResult(res.value, None))
            elif res.status == StatusKind.TIMEOUT:
                out.append(ms.builder.BuilderResult(None, f"build timed out after {self.timeout_sec:g} s"))
            else:
                out.append(ms.builder.BuilderResult(None, f"build failed: {res.value}"))
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=False)


def close_runner(runner) -> None:
    """Stop the worker processes of a MetaSchedule runner (best effort)."""
    pool = getattr(runner, "pool", None)
    if pool is not None:
        pool.shutdown(wait=False)


def parse_tracker(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise LasnetError(f"bad --tracker {text!r}: expected HOST:PORT")
    return host, int(port)


def tracker_summary(host: str, port: int, timeout: float = 10.0) -> dict:
    """The tracker's ``summary()`` (``queue_info``: key -> free/pending, ``server_info``); a one-line
    :class:`LasnetError` when it does not answer within ``timeout`` seconds."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise LasnetError(f"RPC tracker {host}:{port} does not answer ({e.strerror or e})") from None
    result: dict = {}

    def ask():
        try:
            from tvm import rpc

            result["summary"] = rpc.connect_tracker(host, port).summary()
        except Exception as e:  # noqa: BLE001
            result["error"] = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__

    th = threading.Thread(target=ask, daemon=True)
    th.start()
    th.join(timeout)
    if "summary" not in result:
        raise LasnetError(f"RPC tracker {host}:{port} does not answer ({result.get('error', 'timed out')})")
    return result["summary"]


def check_tracker(host: str, port: int, key: str, timeout: float = 10.0) -> None:
    """Fail with a one-line error unless the tracker at ``host:port`` answers and has a free ``key`` board."""
    queue = tracker_summary(host, port, timeout).get("queue_info", {})
    if key not in queue or int(queue[key].get("free", 0)) < 1:
        free = ", ".join(f"{k} ({v.get('free', 0)} free)" for k, v in queue.items()) or "none"
        raise LasnetError(f"RPC tracker {host}:{port} has no free board with key {key!r}; keys: {free}")


def make_runner(layouts: dict, tracker: str | None, key: str | None, timeout: float):
    """A LocalRunner, or an RPCRunner through ``tracker`` (``HOST:PORT``), that fills index arguments with
    valid patch indices (``layouts``: see :func:`.tasks.allocator_layouts`)."""
    from .tasks import IndexArgAllocator, RPCIndexArgAllocator

    cfg = ms.runner.EvaluatorConfig(number=3, repeat=3, min_repeat_ms=40, enable_cpu_cache_flush=False)
    if tracker is None:
        return ms.runner.LocalRunner(timeout_sec=timeout, evaluator_config=cfg,
                                     f_alloc_argument=IndexArgAllocator(layouts))
    host, port = parse_tracker(tracker)
    if not key:
        raise LasnetError("--tracker needs --key (the key the board's RPC server registered with)")
    check_tracker(host, port, key)
    rpc = ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=key, session_timeout_sec=timeout)
    return ms.runner.RPCRunner(rpc_config=rpc, evaluator_config=cfg, f_alloc_argument=RPCIndexArgAllocator(layouts),
                               max_workers=1)


def measure(funcs, target, builder, runner, errors: list | None = None) -> list:
    """Run time (ms, median of the runner's repeats) of each static-shape PrimFunc; None where the build or
    the run failed (the reason is appended to ``errors`` when given)."""
    import statistics

    import tvm

    inputs = [ms.builder.BuilderInput(tvm.IRModule({"main": f}), target) for f in funcs]
    built = builder.build(inputs) if inputs else []
    out = [None] * len(funcs)
    run_inputs, where = [], []
    for i, (f, b) in enumerate(zip(funcs, built)):
        if b.error_msg is None:
            run_inputs.append(ms.runner.RunnerInput(b.artifact_path, device_type(target),
                                                    ms.arg_info.ArgInfo.from_prim_func(f)))
            where.append(i)
        elif errors is not None:
            errors.append(b.error_msg.strip().splitlines()[-1][:300])
    for i, fut in zip(where, runner.run(run_inputs) if run_inputs else []):
        res = fut.result()
        if res.error_msg is None and res.run_secs:
            out[i] = 1e3 * statistics.median(float(s) for s in res.run_secs)
        elif errors is not None:
            errors.append((res.error_msg or "no run time").strip().splitlines()[-1][:300])
    return out
