"""Named target presets and CUDA code generation, resolved in one place.

:func:`resolve_target` accepts the spellings users have (``"llvm"``, ``"llvm -mtriple=aarch64-linux-gnu"``,
``"llvm -mcpu=skylake"``, ``"cuda -arch=sm_70"``, ``"cuda"``, a JSON dict string or a dict, a TVM tag such as
``"nvidia/jetson-tx2"``) and returns a TVM 0.27 :class:`tvm.target.Target` (0.27 rejects the old flag strings).
:func:`build_cuda` compiles a CUDA module for one arch: a cubin through nvcc where nvcc supports the arch
(sm_75 and newer), PTX through TVM's NVPTX LLVM backend for older archs (needs ``CUDA_PATH`` holding
``nvvm/libdevice``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import tvm

from .errors import LasnetError

#: CUDA archs this project knows how to build for.
CUDA_ARCHS = ("sm_53", "sm_60", "sm_61", "sm_62", "sm_70", "sm_72", "sm_75", "sm_80", "sm_86", "sm_87",
              "sm_89", "sm_90")
#: Oldest arch the local nvcc (CUDA 13) compiles; older ones go through NVPTX.
NVCC_MIN_ARCH = 75

_FLAG = re.compile(r"^-{1,2}([A-Za-z_][\w-]*)=(\S+)$")
_FLAG_KEYS = {"mtriple": "mtriple", "mcpu": "mcpu", "mattr": "mattr", "arch": "arch", "mabi": "mabi",
              "max_num_threads": "max_num_threads", "num-cores": "num-cores"}


def host_cpu() -> str:
    """LLVM name of this machine's CPU (``{"mcpu": "native"}`` silently falls back to generic in TVM 0.27)."""
    return str(tvm.target.codegen.llvm_get_system_cpu())


def _check_arch(arch: str) -> str:
    if arch not in CUDA_ARCHS:
        raise LasnetError(f"unknown CUDA arch {arch!r}; known: {', '.join(CUDA_ARCHS)}")
    return arch


def _from_dict(d: dict) -> tvm.target.Target:
    d = dict(d)
    if "kind" not in d:
        raise LasnetError(f"target dict {d!r} has no 'kind'")
    if d.get("mcpu") == "native":
        d["mcpu"] = host_cpu()
    if d["kind"] == "cuda" and "arch" in d:
        _check_arch(str(d["arch"]))
    if d["kind"] == "llvm" and "mcpu" not in d and "mtriple" not in d:
        d["mcpu"] = host_cpu()
    try:
        return tvm.target.Target(d)
    except Exception as e:  # TVM raises ValueError / TVMError with multi-line text
        raise LasnetError(f"bad target {json.dumps(d)}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")


def resolve_target(spec: Any = "llvm") -> tvm.target.Target:
    """Translate a target spelling into a TVM 0.27 :class:`~tvm.target.Target`.

    Parameters
    ----------
    spec : str, dict or Target
        ``"llvm"`` (host CPU), ``"llvm -mcpu=X"``, ``"llvm -mtriple=aarch64-linux-gnu"``, ``"cuda"``,
        ``"cuda -arch=sm_70"``, ``"nvptx -mcpu=sm_62"``, a JSON object string, a dict, or a TVM tag
        (``"nvidia/jetson-tx2"``).

    Raises
    ------
    LasnetError
        Unknown kind, tag or CUDA arch, or malformed flags.
    """
    if isinstance(spec, tvm.target.Target):
        return spec
    if isinstance(spec, dict):
        return _from_dict(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise LasnetError(f"bad target {spec!r}: expected a string, a dict or a tvm Target")
    text = spec.strip()
    if text.startswith("{"):
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise LasnetError(f"bad target JSON {text!r}: {e.msg}") from None
        if not isinstance(d, dict):
            raise LasnetError(f"bad target JSON {text!r}: expected an object")
        return _from_dict(d)
    tokens = text.split()
    kind = tokens[0]
    if "/" in kind:  # a tag
        if len(tokens) > 1:
            raise LasnetError(f"bad target {text!r}: a tag takes no flags")
        try:
            return tvm.target.Target(kind)
        except Exception:
            raise LasnetError(f"unknown target tag {kind!r}") from None
    if kind not in ("llvm", "cuda", "nvptx", "c"):
        raise LasnetError(f"unknown target kind {kind!r} in {text!r}; use llvm, cuda, nvptx or a JSON dict")
    d: dict[str, Any] = {"kind": kind}
    for tok in tokens[1:]:
        m = _FLAG.match(tok)
        if not m or m.group(1) not in _FLAG_KEYS:
            raise LasnetError(f"bad target flag {tok!r} in {text!r}")
        key, value = _FLAG_KEYS[m.group(1)], m.group(2)
        if key == "mattr":
            d[key] = value.split(",")
        elif key in ("max_num_threads", "num-cores"):
            d[key] = int(value)
        else:
            d[key] = value
    if kind == "cuda" and "arch" not in d:
        d["arch"] = "sm_75"  # TVM would guess sm_50 without a GPU; pick the oldest nvcc-buildable arch
    if kind == "nvptx" and "mcpu" in d:
        _check_arch(d["mcpu"])
    return _from_dict(d)


def target_kind(target: Any) -> str:
    """``"cpu"`` for llvm/c targets, ``"cuda"`` for cuda/nvptx."""
    t = resolve_target(target)
    return "cuda" if t.kind.name in ("cuda", "nvptx") else "cpu"


def cuda_root() -> Path | None:
    """CUDA root holding ``nvvm/libdevice`` (``CUDA_PATH``, ``CUDA_HOME`` or /usr/local/cuda), or None."""
    for cand in (os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if cand and (Path(cand) / "nvvm" / "libdevice").is_dir():
            return Path(cand)
    return None


def arch_number(arch: str) -> int:
    """``"sm_70"`` -> 70."""
    return int(_check_arch(arch).split("_")[1])


_PTX_KERNEL_FUNC = re.compile(r"^(\.visible\s+)\.func(\s+\w+_kernel\w*\s*\()", re.M)


def fix_ptx_entries(ptx: str) -> str:
    """Turn TVM's ``*_kernel`` device functions back into launchable ``.entry`` points.

    With TVM 0.27 and LLVM 22 the NVPTX backend emits kernels as ``.visible .func name_kernel(...)``
    (the kernel calling convention is lost), which the driver cannot launch. The parameter lists and
    ``ld.param`` accesses are valid for ``.entry`` as they are, so the directive is rewritten.
    """
    return _PTX_KERNEL_FUNC.sub(r"\1.entry\2", ptx)


# In a library's serialized PTX: the ``// .globl`` comment before each kernel gives up one space so that
# ``.func`` can become ``.entry`` without moving a byte (the blob is length-prefixed).
_PTX_KERNEL_IN_LIBRARY = re.compile(rb"// \.globl(\s+)(\w+_kernel\w*)(\s+)\.visible(\s+)\.func(\s+)\2\(")


def fix_ptx_entries_in_library(path) -> int:
    """Apply :func:`fix_ptx_entries` to the PTX embedded in an exported library, in place and without
    changing its size; return the number of kernels fixed.

    Raises
    ------
    LasnetError
        A ``.func`` kernel is left that the rewrite cannot reach (the file is then left unchanged).
    """
    path = Path(path)
    data = path.read_bytes()
    fixed, n = _PTX_KERNEL_IN_LIBRARY.subn(rb"//.globl\1\2\3.visible\4.entry\5\2(", data)
    if re.search(rb"\.visible\s+\.func\s+\w+_kernel\w*\s*\(", fixed):
        raise LasnetError(f"{path}: PTX kernels left as .func (cannot be launched); not rewritten")
    assert len(fixed) == len(data)
    if n:
        tmp = path.with_name(path.name + ".ptxfix")
        tmp.write_bytes(fixed)
        tmp.replace(path)
    return n


def cuda_source(mod, arch: str) -> str:
    """CUDA C generated for ``arch`` (codegen only, no compiler needed: works for archs nvcc refuses).

    Raises
    ------
    LasnetError
        Unknown arch, or no kernel in the generated code (an unscheduled function builds host-only).
    """
    _check_arch(arch)
    ex = tvm.compile(mod, target=tvm.target.Target({"kind": "cuda", "arch": arch}))
    dev_mods = [m for m in ex.mod.imports if m.kind == "cuda"]
    src = dev_mods[0].inspect_source("cuda") if dev_mods else ""
    if "__global__" not in src:
        raise LasnetError(f"no CUDA kernel generated for {arch}: is the function scheduled for the GPU?")
    return src


def build_cuda(mod, arch: str):
    """Compile a scheduled CUDA ``IRModule``/PrimFunc for ``arch`` into device code.

    Returns
    -------
    (fmt, code)
        ``("cubin", bytes)`` through nvcc for sm_75 and newer; ``("ptx", str)`` through TVM's NVPTX LLVM
        backend for older archs (sm_53, sm_62, sm_70, sm_72, ...).

    Raises
    ------
    LasnetError
        Unknown arch, no CUDA root with libdevice for NVPTX, nvcc missing or failing, or a module without any
        GPU kernel.
    """
    n = arch_number(arch)
    if n >= NVCC_MIN_ARCH:
        from tvm.support import nvcc

        src = cuda_source(mod, arch)
        try:
            with tvm.target.Target({"kind": "cuda", "arch": arch}):
                cubin = nvcc.compile_cuda(src, target_format="cubin", arch=arch, compiler="nvcc")
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LasnetError(f"nvcc failed for {arch}: {first}") from None
        return "cubin", bytes(cubin)
    root = cuda_root()
    if root is None:
        raise LasnetError(f"{arch} needs the NVPTX backend: set CUDA_PATH to a CUDA root holding nvvm/libdevice")
    os.environ["CUDA_PATH"] = str(root)
    try:
        ex = tvm.compile(mod, target=tvm.target.Target({"kind": "nvptx", "mcpu": arch}))
    except tvm.error.InternalError as e:
        # Known with TVM 0.27 + LLVM 22: kernels with __syncthreads (shared-memory staging) fail LLVM
        # verification (barrier intrinsic arity). Use a barrier-free schedule for these archs.
        msg = " ".join(str(e).split())
        hint = " (kernel uses a barrier: use a schedule without shared memory)" if "barrier" in msg else ""
        raise LasnetError(f"NVPTX build for {arch} failed{hint}: {msg[:160]}") from None
    dev_mods = [m for m in ex.mod.imports if m.kind in ("cuda", "nvptx")]
    ptx = fix_ptx_entries(dev_mods[0].inspect_source("")) if dev_mods else ""
    if ".entry" not in ptx:
        raise LasnetError(f"no CUDA kernel generated for {arch}: is the function scheduled for the GPU?")
    return "ptx", ptx
