"""A runtime-only copy of TVM for a bundle: the installed ``tvm`` package without its compiler, ``tvm_ffi`` for
the target's Python (the local one, or a wheel fetched with pip) and ``typing_extensions`` (tvm_ffi's one
dependency besides the standard library).

The ``tvm`` package is copied without ``lib/libtvm_compiler.so`` and the parts that a runtime-only
``import tvm`` (``TVM_USE_RUNTIME_LIB=1``) followed by loading and running a Relax VM library never imports:
sources, headers, the web runtime, the Relax/TensorIR-scheduling/TOPI compiler packages, test helpers. The
bundle tests run the copy in a virtual environment without any other TVM, so a part needed after all fails them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from ..errors import LasnetError

# Top-level entries of the tvm package a runtime-only bundle leaves out (the licenses stay).
TVM_COMPILER_ONLY = {"3rdparty", "src", "include", "web", "cmake", "lib64", "relax", "s_tir", "topi", "testing",
                     "contrib", "exec"}
TVM_COMPILER_LIB = "libtvm_compiler.so"
# Top-level entries of the tvm_ffi package only needed to build extensions against it.
FFI_BUILD_ONLY = {"3rdparty", "src", "include", "cython", "stub", "cmake", "share", "CMakeLists.txt", "testing",
                  "core.pyi"}
FFI_DIST = "apache-tvm-ffi"
MIN_PYTHON = (3, 10)  # the tvm package's Requires-Python


def local_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def parse_python(version: str | None) -> str:
    """``X.Y`` of the target's Python (default: this one), checked against what TVM supports."""
    if version is None:
        return local_python()
    m = re.fullmatch(r"3\.(\d+)", version.strip())
    if m is None:
        raise LasnetError(f"--python {version}: expected a Python version X.Y, e.g. 3.12")
    if (3, int(m.group(1))) < MIN_PYTHON:
        raise LasnetError(f"--python {version}: TVM needs Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer")
    return f"3.{int(m.group(1))}"


def _package_dir(name: str) -> Path:
    import importlib

    return Path(importlib.import_module(name).__file__).parent


def _top_level_ignore(root: Path, names_out: set[str], extra=()):
    """A ``copytree`` ignore that drops ``names_out`` at the package root, caches everywhere, ``extra`` paths."""
    extra = {root / e for e in extra}

    def ignore(directory, names):
        d = Path(directory)
        out = {n for n in names if n == "__pycache__" or d / n in extra}
        if d == root:
            out |= names_out & set(names)
        return out

    return ignore


def copy_tvm(dest: Path) -> Path:
    """Copy the installed tvm package into ``dest/tvm`` without its compiler."""
    src = _package_dir("tvm")
    shutil.copytree(src, dest / "tvm", ignore=_top_level_ignore(src, TVM_COMPILER_ONLY, [f"lib/{TVM_COMPILER_LIB}"]))
    return dest / "tvm"


def _prune_ffi(pkg: Path) -> None:
    for name in FFI_BUILD_ONLY:
        p = pkg / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    for cache in pkg.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)


def fetch_ffi_wheel(python: str, workdir: Path) -> Path:
    """Download the pinned tvm_ffi wheel for Python ``python`` (this machine's platform) into ``workdir``."""
    version = metadata.version(FFI_DIST)
    cmd = [sys.executable, "-m", "pip", "download", f"{FFI_DIST}=={version}", "--python-version", python,
           "--only-binary=:all:", "--no-deps", "--quiet", "--disable-pip-version-check", "-d", str(workdir)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LasnetError(f"cannot fetch {FFI_DIST}=={version} for Python {python}: {e}") from None
    wheels = sorted(workdir.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")] or proc.stderr.splitlines()
        why = errors[-1].removeprefix("ERROR: ")[:200] if errors else f"pip exited with {proc.returncode}"
        raise LasnetError(f"cannot fetch {FFI_DIST}=={version} for Python {python} ({why})")
    return wheels[0]


def copy_ffi(dest: Path, python: str) -> Path:
    """Put tvm_ffi for Python ``python`` into ``dest/tvm_ffi``: the local package when it is this Python's,
    else the files of the pinned version's wheel for that Python."""
    if python == local_python():
        shutil.copytree(_package_dir("tvm_ffi"), dest / "tvm_ffi", ignore=shutil.ignore_patterns("__pycache__"))
    else:
        with tempfile.TemporaryDirectory() as d:
            wheel = fetch_ffi_wheel(python, Path(d))
            with zipfile.ZipFile(wheel) as z:
                members = [n for n in z.namelist() if n.startswith("tvm_ffi/")]
                z.extractall(dest, members)
                for info in z.infolist():  # zipfile drops the executable bit of the libraries
                    if info.filename in members and info.external_attr >> 16:
                        (dest / info.filename).chmod((info.external_attr >> 16) & 0o777)
    _prune_ffi(dest / "tvm_ffi")
    return dest / "tvm_ffi"


def copy_runtime(dest: Path, python: str) -> dict:
    """A runtime-only TVM for Python ``python`` in ``dest``; returns the versions it holds."""
    dest.mkdir(parents=True, exist_ok=True)
    copy_ffi(dest, python)  # first: the one step that can fail for want of a wheel
    copy_tvm(dest)
    import typing_extensions

    shutil.copy2(typing_extensions.__file__, dest / "typing_extensions.py")
    return {"tvm": metadata.version("apache-tvm"), "tvm_ffi": metadata.version(FFI_DIST),
            "typing_extensions": metadata.version("typing_extensions")}
