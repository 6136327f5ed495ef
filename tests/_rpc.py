"""A TVM RPC tracker and one RPC server on localhost, standing in for a board in the tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def queue(port: int) -> dict:
    """The tracker's ``queue_info`` (board key -> counts)."""
    from tvm import rpc

    return rpc.connect_tracker("127.0.0.1", port).summary().get("queue_info", {})


def stop_group(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Stop ``proc`` and every process of its group (it was started with ``start_new_session=True``)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.time() + timeout
        while time.time() < deadline:  # the group's other members (popen workers) exit too
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


@contextlib.contextmanager
def localhost_board(key: str, log=None):
    """Start a tracker and a server registered as ``key``; yield ``"127.0.0.1:PORT"`` of the tracker.

    The server's output goes to the file ``log`` (else nowhere). Each runs in a process group of its own, which
    is stopped on exit: tracker and server serve from TVM ``popen_worker`` children (~400 MB each), which
    would outlive a plain terminate of their parent.
    """
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port",
                               str(port), "--port-end", str(port + 1)], env=env, start_new_session=True, **quiet)]
    out = open(log, "w") if log is not None else None
    try:
        deadline = time.time() + 60
        while True:
            try:
                queue(port)
                break
            except Exception:  # noqa: BLE001 - not up yet
                assert time.time() < deadline, "tracker did not start"
                time.sleep(0.5)
        sp = free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1",
                                       "--port", str(sp), "--port-end", str(sp + 20),
                                       "--tracker", f"127.0.0.1:{port}", "--key", key], env=env,
                                      start_new_session=True,
                                      **(dict(stdout=out, stderr=subprocess.STDOUT) if out else quiet)))
        while key not in queue(port):
            assert time.time() < deadline + 30, "server did not register"
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        for p in reversed(procs):
            stop_group(p)
        if out is not None:
            out.close()
