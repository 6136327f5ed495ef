"""Child processes of the test session: TVM ``popen_worker`` processes and how to stop them."""

from __future__ import annotations

import os
import signal
import time


#: Environment variable set for the test session (its pid); every process started under it inherits it, also
#: one orphaned when its parent (an RPC server, a pool) was stopped.
MARK = "LASNET_TVM_TEST_SESSION"


def _environ_mark(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return None
    key = MARK.encode() + b"="
    for item in env:
        if item.startswith(key):
            return item[len(key):].decode()
    return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def popen_workers() -> list[int]:
    """Live TVM ``popen_worker`` processes started under this test session (orphans included)."""
    mark, out = os.environ.get(MARK), []
    if mark is None:
        return out
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and "popen_worker" in _cmdline(pid) and _environ_mark(pid) == mark:
            out.append(pid)
    return out


def stop(pids: list[int], timeout: float = 10.0) -> None:
    """SIGTERM ``pids``, then SIGKILL those still alive after ``timeout`` seconds."""
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + timeout
    for p in pids:
        while time.time() < deadline and os.path.exists(f"/proc/{p}") and _cmdline(p):
            time.sleep(0.1)
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
