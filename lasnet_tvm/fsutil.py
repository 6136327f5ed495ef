"""Writing output files safely: checked before long work starts, written atomically, readable by others.

Every file the toolkit writes (compiled libraries and manifests, logits, masks, checkpoints, profiles, JSON
results, plots) goes through :func:`atomic_write` or :func:`atomic_path`: the data lands in a temporary file in
the destination's folder, which is renamed over the destination only once it is complete. A failed, full or
interrupted write therefore never leaves a half-written file, and never damages the file that was there. Files
get mode ``0o666`` minus the umask (like ``open()``), not the ``0o600`` of :func:`tempfile.mkstemp`.

Failures (a read-only folder, a full disk, a file-size limit, a path under a regular file) are raised as
:class:`~lasnet_tvm.errors.LasnetError` naming the destination. :func:`check_writable` finds most of them
before a command spends minutes compiling, training or measuring.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import LasnetError


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror[0].lower() + e.strerror[1:]
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _probe(folder: Path, shown: Path, what: str) -> None:
    """Create ``folder`` (and its parents), then create and remove a file in it; a LasnetError names ``shown``."""
    above = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if above is not None and not above.is_dir():
        raise LasnetError(f"{shown}: cannot write the {what} there ({above} is a file, not a folder)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".lasnet-tvm.", suffix=".probe", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise LasnetError(f"{shown}: cannot write the {what} there ({_reason(e)})") from None


def check_writable(path: str | os.PathLike, what: str = "output") -> Path:
    """Fail now (a LasnetError) when the file ``path`` cannot be written: call before long work starts.

    Creates the missing parent folders, then creates and removes a probe file beside ``path`` (what the
    atomic write will do), so that a read-only file system, a missing permission or a parent that is a regular
    file are reported. A disk that fills up later is reported by the write itself.
    """
    path = Path(path)
    if path.is_dir():
        raise LasnetError(f"{path}: is a directory; give a file name for the {what}")
    _probe(path.parent, path, what)
    return path


def check_dir_writable(folder: str | os.PathLike, what: str = "results") -> Path:
    """Like :func:`check_writable` for a folder that files will be written into (created if missing)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise LasnetError(f"{folder}: not a folder; give a folder for the {what}")
    _probe(folder, folder, what)
    return folder


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, what: str = "output") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix) for a writer that needs a file name
    (``export_library``, ``torch.save``, ``savefig``); rename it over ``path`` when the block succeeds.

    On any failure the temporary file is removed and ``path`` keeps its old content; a write error (OSError,
    or the RuntimeError torch and TVM raise for one) becomes a one-line LasnetError.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise LasnetError(f"{path}: cannot write the {what} ({_reason(e)})") from None
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        tmp.unlink(missing_ok=True)
        raise LasnetError(f"{path}: cannot write the {what} ({_reason(e)})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str, what: str = "output") -> Path:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` atomically; see :func:`atomic_path`."""
    raw = data.encode() if isinstance(data, str) else data
    with atomic_path(path, what) as tmp:
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)
