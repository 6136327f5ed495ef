"""Helpers of the bad-input tests: run the CLI, check that an error is one clean line, hash the files around."""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner


def invoke(*args, env: dict | None = None):
    """``lasnet-tvm ARGS`` in this process (click's CliRunner; stdout and stderr apart)."""
    from lasnet_tvm.cli.main import cli

    return CliRunner(env=env).invoke(cli, [str(a) for a in args])


def cli_process(*args, fsize: int | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``lasnet-tvm ARGS`` in a child process; ``fsize``: its file-size limit in bytes (RLIMIT_FSIZE), so that
    any write past it fails with EFBIG as on a full disk."""

    def limit():
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    code = "import sys; from lasnet_tvm.cli.main import main; sys.argv[0] = 'lasnet-tvm'; main()"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})


def assert_one_line_error(res, *needles: str, code: int = 1, progress: bool = False) -> str:
    """``res`` (a CliRunner result or a CompletedProcess) failed with exit code ``code`` and exactly one line on
    stderr, ``Error: ...`` holding every needle, and no traceback anywhere. Returns that line.

    With ``progress`` the command may have logged progress on stderr before it failed: the error is then the
    last line and the only ``Error:`` line."""
    rc = res.exit_code if hasattr(res, "exit_code") else res.returncode
    out = res.stdout if isinstance(res.stdout, str) else ""
    err = res.stderr
    lines = [line for line in err.splitlines() if line.strip()]
    if progress:
        assert sum(line.startswith("Error:") for line in lines) == 1, f"not one error line: {err!r}"
        lines = lines[-1:]
    assert rc == code, f"exit code {rc}, expected {code}: {err!r} {getattr(res, 'exception', None)!r}"
    assert len(lines) == 1 and lines[0].startswith("Error: "), f"stderr is not one error line: {err!r}"
    assert "Traceback" not in out + err
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]


def snapshot(folder: str | os.PathLike) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` (temporary files show up as new names)."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def fill(folder: Path, *names: str) -> dict[str, str]:
    """Create ``names`` in ``folder`` with distinct content (earlier results); returns the snapshot."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (folder / name).write_bytes(f"earlier result {i} of {name}\n".encode() * 10)
    return snapshot(folder)
