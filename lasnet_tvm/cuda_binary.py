"""CUDA libraries that load without a compiler on the target: TVM's CUDA C compiled to a fatbin when exported.

TVM 0.27 keeps a CUDA module's kernels as CUDA C (format ``"cuda"``) and compiles them when the library is loaded,
which needs NVRTC or nvcc and CUDA's headers on the target. :func:`binary_pack_imports` replaces that source, while
the library is exported, by a fatbin holding the kernels' cubin for the arch and their PTX (which the driver
JIT-compiles for newer GPUs):

- sm_75 and newer: nvcc (the local CUDA) -> PTX -> ptxas -> cubin;
- sm_53 ... sm_72, which CUDA 13 refuses: NVRTC 12 -> PTX -> ptxas 12 -> cubin, from the pip packages of the
  ``cuda-legacy`` extra (``pip install 'lasnet-tvm[cuda-legacy]'``).

ptxas's resource report (registers, shared memory, spills) of every kernel is kept (:class:`DeviceBinary`) for
``lasnet-tvm inspect``. :func:`read_device_modules` reads the device modules back from an exported library
without loading it (no GPU needed).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LasnetError
from .targets import NVCC_MIN_ARCH, arch_number

LEGACY_EXTRA = "cuda-legacy"
#: Symbol under which an exported library holds its serialized modules (tvm_ffi's library module).
LIBRARY_BIN_SYMBOL = "__tvm_ffi__library_bin"
FATBIN_MAGIC = b"\x50\xed\x55\xba"
ELF_MAGIC = b"\x7fELF"


@dataclass
class KernelResources:
    """ptxas's report of one kernel."""

    registers: int = 0
    shared_bytes: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    stack_bytes: int = 0

    @property
    def spills(self) -> int:
        """Bytes spilled to local memory (stores + loads)."""
        return self.spill_stores + self.spill_loads


@dataclass
class DeviceBinary:
    """Device code of one CUDA module: ``fmt`` (``"fatbin"``), the bytes, ptxas's report per kernel."""

    arch: str
    fmt: str
    data: bytes
    kernels: dict[str, KernelResources] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- toolchains

def _nvidia_package_dir(name: str) -> Path | None:
    """``site-packages/nvidia/<name>`` of an installed NVIDIA pip package, or None."""
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        if (Path(root) / name).is_dir():
            return Path(root) / name
    return None


def _legacy_toolchain() -> tuple[Path, Path, list[Path]]:
    """``(libnvrtc.so.12, ptxas 12, include dirs)`` from the ``cuda-legacy`` extra's packages."""
    nvrtc, nvcc, runtime, cccl = (_nvidia_package_dir(n) for n in ("cuda_nvrtc", "cuda_nvcc", "cuda_runtime",
                                                                     "cuda_cccl"))
    lib = nvrtc / "lib" / "libnvrtc.so.12" if nvrtc else None
    ptxas = nvcc / "bin" / "ptxas" if nvcc else None
    includes = [d / "include" for d in (cccl, runtime) if d is not None]
    if lib is None or not lib.is_file() or ptxas is None or not ptxas.is_file() or len(includes) < 2:
        raise LasnetError(f"CUDA archs older than sm_{NVCC_MIN_ARCH} need NVRTC 12 and ptxas 12: "
                          f"pip install 'lasnet-tvm[{LEGACY_EXTRA}]'")
    if not os.access(ptxas, os.X_OK):
        ptxas.chmod(ptxas.stat().st_mode | 0o111)  # the wheel installs ptxas without its run bit
    return lib, ptxas, includes


def require_legacy_toolchain() -> None:
    """Raise a one-line LasnetError naming the ``cuda-legacy`` extra when it is not installed."""
    _legacy_toolchain()


def legacy_available() -> bool:
    """Whether the ``cuda-legacy`` extra is installed."""
    try:
        _legacy_toolchain()
    except LasnetError:
        return False
    return True


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise LasnetError(f"{name} not found on PATH: CUDA libraries are compiled with the CUDA toolkit's "
                          "nvcc, ptxas and fatbinary")
    return path


def _run(cmd: list[str], what: str) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LasnetError(f"{what} failed: {e}") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if "error" in ln.lower()]
        lines = lines or (proc.stderr + proc.stdout).strip().splitlines() or [f"exit code {proc.returncode}"]
        raise LasnetError(f"{what} failed: {lines[0].strip()[:200]}")
    return proc.stdout + proc.stderr


def _nvrtc_ptx(source: str, arch: str) -> str:
    """PTX of ``source`` for ``compute_XX`` through NVRTC 12 (the ``cuda-legacy`` extra)."""
    lib_path, _, includes = _legacy_toolchain()
    lib = ctypes.CDLL(str(lib_path))
    prog = ctypes.c_void_p()
    if lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"lasnet_kernels.cu", 0, None, None):
        raise LasnetError("NVRTC cannot create a program")
    opts = [f"--gpu-architecture=compute_{arch_number(arch)}".encode(), b"--std=c++17"]
    opts += [f"-I{d}".encode() for d in includes]
    try:
        rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
        size = ctypes.c_size_t()
        if rc:
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(prog, log)
            errors = [ln for ln in log.value.decode(errors="replace").splitlines() if "error" in ln]
            raise LasnetError(f"NVRTC failed for {arch}: {(errors or ['error ' + str(rc)])[0].strip()[:200]}")
        lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetPTX(prog, ptx)
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return ptx.value.decode()


_PTXAS_ENTRY = re.compile(r"Compiling entry function '(\w+)'")
_PTXAS_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def parse_ptxas_report(text: str) -> dict[str, KernelResources]:
    """Registers, shared bytes, spills and stack of each kernel in ``ptxas -v`` output."""
    kernels: dict[str, KernelResources] = {}
    current = None
    for line in text.splitlines():
        if m := _PTXAS_ENTRY.search(line):
            current = kernels.setdefault(m.group(1), KernelResources())
        elif current is not None and (m := _PTXAS_FRAME.search(line)):
            current.stack_bytes, current.spill_stores, current.spill_loads = map(int, m.groups())
        elif current is not None and (m := _PTXAS_USED.search(line)):
            current.registers = int(m.group(1))
            current.shared_bytes = int(m.group(2) or 0)
    return kernels


def compile_fatbin(source: str, arch: str) -> DeviceBinary:
    """Compile TVM's CUDA C ``source`` into a fatbin with the cubin for ``arch`` and its PTX.

    Raises
    ------
    LasnetError
        A missing toolchain (naming the ``cuda-legacy`` extra for old archs) or a compiler error.
    """
    n = arch_number(arch)
    with tempfile.TemporaryDirectory(prefix="lasnet-cuda-") as d:
        work = Path(d)
        if n >= NVCC_MIN_ARCH:
            ptxas = _tool("ptxas")
            (work / "k.cu").write_text(source)
            _run([_tool("nvcc"), "-ptx", "-O3", f"-arch=compute_{n}", "-o", str(work / "k.ptx"), str(work / "k.cu")],
                 f"nvcc for {arch}")
        else:
            ptxas = str(_legacy_toolchain()[1])
            (work / "k.ptx").write_text(_nvrtc_ptx(source, arch))
        report = _run([ptxas, "-v", "-O3", f"-arch=sm_{n}", "-o", str(work / "k.cubin"), str(work / "k.ptx")],
                      f"ptxas for {arch}")
        _run([_tool("fatbinary"), f"--create={work / 'k.fatbin'}", f"--image3=kind=elf,sm={n},file={work / 'k.cubin'}",
              f"--image3=kind=ptx,sm={n},file={work / 'k.ptx'}"], f"fatbinary for {arch}")
        return DeviceBinary(arch, "fatbin", (work / "k.fatbin").read_bytes(), parse_ptxas_report(report))


def device_code_record(binaries: list[DeviceBinary]) -> dict:
    """What a manifest records of a library's device code: format, arch and ptxas's report per kernel."""
    kernels = {}
    for b in binaries:
        for name, k in b.kernels.items():
            kernels[name] = {"registers": k.registers, "shared_bytes": k.shared_bytes, "spills": k.spills,
                             "spill_stores": k.spill_stores, "spill_loads": k.spill_loads,
                             "stack_bytes": k.stack_bytes}
    return {"format": "+".join(sorted({b.fmt for b in binaries})) or "none",
            "arch": binaries[0].arch if binaries else None, "images": ["cubin", "ptx"] if binaries else [],
            "kernels": kernels}


# ---------------------------------------------------------------------------- the serialized import tree

class _Reader:
    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def u64(self) -> int:
        (v,) = struct.unpack_from("<Q", self.data, self.pos)
        self.pos += 8
        return v

    def raw(self) -> bytes:
        n = self.u64()
        if self.pos + n > len(self.data):
            raise ValueError("truncated")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def str(self) -> str:
        return self.raw().decode()

    def skip(self, item_bytes: int) -> None:
        """Skip a vector of fixed-size items."""
        n = self.u64()
        self.pos += item_bytes * n

    def vec(self, read):
        return [read() for _ in range(self.u64())]


def _pack(*parts: bytes) -> bytes:
    return b"".join(parts)


def _bytes(b: bytes) -> bytes:
    return struct.pack("<Q", len(b)) + b


@dataclass
class CudaModuleImage:
    """A serialized CUDA module: format (``cuda`` = source, ``fatbin``, ``cubin``, ``ptx``), kernels, code."""

    fmt: str
    kernels: dict[str, list[str]]  # kernel -> launch parameter tags (blockIdx.x, threadIdx.x, ...)
    fmap: bytes  # the function table, as serialized
    data: bytes

    def serialize(self) -> bytes:
        return _pack(_bytes(self.fmt.encode()), self.fmap, _bytes(self.data))


def parse_cuda_module(payload: bytes) -> CudaModuleImage:
    """Parse the bytes a CUDA module serializes to (its format, function table and code)."""
    r = _Reader(payload)
    fmt = r.str()
    start = r.pos
    kernels = {}
    for _ in range(r.u64()):
        r.str()  # key
        name = r.str()
        r.skip(4)  # argument types (DLDataType, 4 bytes each)
        kernels[name] = r.vec(r.str)  # launch parameter tags
        r.skip(4)  # argument extra tags (int32)
    fmap = payload[start:r.pos]
    data = r.raw()
    if r.pos != len(payload):
        raise ValueError(f"{len(payload) - r.pos} bytes left after the CUDA module")
    return CudaModuleImage(fmt, kernels, fmap, data)


def _split_blob(blob: bytes):
    """``(header, [(key, payload or None)])`` of a packed import tree (``header`` holds the tree's indices)."""
    r = _Reader(blob)
    r.u64()  # bytes that follow
    row_ptr = r.vec(r.u64)
    r.vec(r.u64)  # child indices
    header_end = r.pos
    modules = []
    for _ in range(len(row_ptr) - 1):
        key = r.str()
        modules.append((key, None if key == "_lib" else r.raw()))
    if r.pos != len(blob):
        raise ValueError("bytes left after the modules")
    return blob[8:header_end], modules


def rewrite_cuda_modules(blob: bytes, convert) -> bytes:
    """The packed import tree ``blob`` with each CUDA module's image replaced by ``convert(image)``."""
    header, modules = _split_blob(blob)
    body = [header]
    for key, payload in modules:
        body.append(_bytes(key.encode()))
        if payload is not None:
            if key == "cuda":
                payload = convert(parse_cuda_module(payload)).serialize()
            body.append(_bytes(payload))
    out = b"".join(body)
    return struct.pack("<Q", len(out)) + out


def binary_pack_imports(arch: str, binaries: list[DeviceBinary], inline: bool = False):
    """An ``fpack_imports`` for ``export_library``: serialize the imports with every CUDA module's source
    compiled to a fatbin for ``arch`` (appended to ``binaries``), as an assembler file holding the blob.

    The assembler file includes the blob from the workspace (fast for a model's megabytes of weights);
    ``inline`` writes its bytes into the file instead, for a ``.tar`` export that is linked on another machine.
    """
    import tvm_ffi

    def convert(image: CudaModuleImage) -> CudaModuleImage:
        if image.fmt != "cuda":
            return image
        binary = compile_fatbin(image.data.decode(), arch)
        binaries.append(binary)
        return CudaModuleImage(binary.fmt, image.kernels, image.fmap, binary.data)

    def pack(mod, is_system_lib: bool, prefix: str, workspace_dir: str) -> str:
        if is_system_lib or prefix:
            raise LasnetError("CUDA libraries are exported as shared libraries, not system libraries")
        blob = bytes(tvm_ffi.get_global_func("runtime.ModulePackImportsToTensor")(mod).numpy().tobytes())
        blob = rewrite_cuda_modules(blob, convert)
        if inline:
            data = "\n".join("\t.byte " + ",".join(map(str, blob[i:i + 64])) for i in range(0, len(blob), 64))
        else:
            blob_path = Path(workspace_dir) / "devc.bin"
            blob_path.write_bytes(blob)
            data = f'\t.incbin "{blob_path}"'
        asm = Path(workspace_dir) / "devc.s"
        asm.write_text(f'\t.section .rodata\n\t.globl {LIBRARY_BIN_SYMBOL}\n\t.type {LIBRARY_BIN_SYMBOL}, %object\n'
                       f'\t.balign 16\n{LIBRARY_BIN_SYMBOL}:\n{data}\n'
                       f'\t.size {LIBRARY_BIN_SYMBOL}, .-{LIBRARY_BIN_SYMBOL}\n'
                       '\t.section .note.GNU-stack,"",%progbits\n')
        return str(asm)

    return pack


# -------------------------------------------------------------------------------- reading a library back

def _library_blob(path: Path) -> bytes:
    """The packed import tree of an exported library, read from its ELF symbol table (no loading)."""
    data = path.read_bytes()
    if data[:4] != ELF_MAGIC or data[4] != 2:
        raise LasnetError(f"{path}: not a 64-bit ELF shared library")
    fmt = "<" if data[5] == 1 else ">"
    shoff, = struct.unpack_from(fmt + "Q", data, 0x28)
    shentsize, shnum = struct.unpack_from(fmt + "HH", data, 0x3A)
    sections = [struct.unpack_from(fmt + "IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    for sh in sections:
        if sh[1] not in (2, 11):  # SHT_SYMTAB, SHT_DYNSYM
            continue
        strtab = sections[sh[6]]
        for off in range(sh[4], sh[4] + sh[5], 24):
            st_name, _, _, shndx, value, size = struct.unpack_from(fmt + "IBBHQQ", data, off)
            end = data.index(b"\0", strtab[4] + st_name)
            if data[strtab[4] + st_name:end].decode(errors="replace") == LIBRARY_BIN_SYMBOL and shndx:
                sec = sections[shndx]
                start = value - sec[3] + sec[4]  # address -> file offset
                n, = struct.unpack_from("<Q", data, start)
                return data[start:start + 8 + n]
    raise LasnetError(f"{path}: holds no TVM modules (no {LIBRARY_BIN_SYMBOL}); is it a lasnet-tvm library?")


def read_device_modules(path) -> list[CudaModuleImage]:
    """The CUDA modules of an exported library, read without loading it.

    Raises
    ------
    LasnetError
        Not an ELF library, or one without TVM's serialized modules.
    """
    path = Path(path)
    try:
        _, modules = _split_blob(_library_blob(path))
        return [parse_cuda_module(p) for key, p in modules if key == "cuda"]
    except (ValueError, struct.error, IndexError) as e:
        raise LasnetError(f"{path}: corrupt TVM module table ({e})") from None


def fatbin_images(data: bytes) -> list[str]:
    """The kinds of the images in a fatbin (``"ptx"``, ``"cubin"``), in order; empty for anything else."""
    if data[:4] != FATBIN_MAGIC:
        return []
    _, _, header, size = struct.unpack_from("<IHHQ", data, 0)
    kinds, off = [], header
    while off + 16 <= min(header + size, len(data)):
        kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, off)
        kinds.append({1: "ptx", 2: "cubin"}.get(kind, str(kind)))
        off += entry_header + payload
    return kinds


def binary_kind(image: CudaModuleImage) -> str:
    """``"cubin"`` (a fatbin or cubin holding machine code), ``"ptx"`` or ``"source"`` (CUDA C)."""
    if (image.fmt == "cubin" and image.data[:4] == ELF_MAGIC) or "cubin" in fatbin_images(image.data):
        return "cubin"
    if "ptx" in fatbin_images(image.data):
        return "ptx"
    return {"ptx": "ptx", "cuda": "source"}.get(image.fmt, image.fmt)
