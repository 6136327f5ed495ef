"""CUDA libraries ship machine code (a fatbin: cubin + PTX), not CUDA C; old archs build through NVRTC 12 +
ptxas 12 (the ``cuda-legacy`` extra); ``lasnet-tvm inspect`` reports each kernel's resources. No GPU needed."""

import json
import shutil

import pytest
from click.testing import CliRunner

import lasnet_tvm.cuda_binary as cb
import lasnet_tvm.kernels as K
from _compiler import small_model
from lasnet_tvm.cli.main import cli
from lasnet_tvm.compiler import build_target, compile_model
from lasnet_tvm.compiler.artifact import save_artifact
from lasnet_tvm.errors import LasnetError
from lasnet_tvm.targets import cuda_source
from test_targets import SHAPES

needs_nvcc = pytest.mark.skipif(not all(shutil.which(t) for t in ("nvcc", "ptxas", "fatbinary")),
                                reason="CUDA toolkit (nvcc, ptxas, fatbinary) not installed")
needs_legacy = pytest.mark.skipif(not cb.legacy_available() or shutil.which("fatbinary") is None,
                                  reason="the cuda-legacy extra (pip install '.[cuda-legacy]') is not installed")


def _shared_memory_kernel(arch):
    """gather_conv3x3's CUDA C: stages its window in shared memory behind __syncthreads."""
    p = SHAPES["gather_conv3x3"]
    mod = K.get("gather_conv3x3").schedule_cuda(K.builder("gather_conv3x3")(**p), **p).mod
    src = cuda_source(mod, arch)
    assert "__shared__" in src and "__syncthreads()" in src
    return src


@pytest.fixture(scope="module")
def sm90_library(tmp_path_factory):
    if not all(shutil.which(t) for t in ("nvcc", "ptxas", "fatbinary")):
        pytest.skip("CUDA toolkit (nvcc, ptxas, fatbinary) not installed")
    path = tmp_path_factory.mktemp("cuda") / "model.so"
    result = compile_model(small_model(seed=11), build_target("cuda -arch=sm_90"))
    save_artifact(result.executable, path, result.manifest)
    return path


def test_library_ships_fatbin_not_source(sm90_library):
    data = sm90_library.read_bytes()
    assert b"__global__" not in data and b"#include <cuda" not in data  # no CUDA C left to compile at load time
    images = cb.read_device_modules(sm90_library)
    assert len(images) == 1
    image = images[0]
    assert image.fmt == "fatbin" and image.data[:4] == cb.FATBIN_MAGIC
    assert cb.ELF_MAGIC in image.data and cb.fatbin_images(image.data) == ["cubin", "ptx"]  # sm_90 SASS + PTX
    assert any("gather_conv3x3" in k for k in image.kernels)
    manifest = json.loads(sm90_library.with_suffix(".json").read_text())
    assert manifest["device_code"]["arch"] == "sm_90"
    assert set(manifest["device_code"]["kernels"]) == set(image.kernels)  # ptxas reported every kernel


def test_module_table_round_trip(sm90_library):
    """Rewriting the module table without changing a module gives back the same bytes."""
    blob = cb._library_blob(sm90_library)
    assert cb.rewrite_cuda_modules(blob, lambda image: image) == blob


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_75", "sm_90"])
def test_fatbin_for_nvcc_archs(arch):
    b = cb.compile_fatbin(_shared_memory_kernel(arch), arch)
    assert b.fmt == "fatbin" and b.data[:4] == cb.FATBIN_MAGIC and cb.ELF_MAGIC in b.data
    assert cb.fatbin_images(b.data) == ["cubin", "ptx"]
    (k,) = b.kernels.values()
    assert k.shared_bytes > 0 and k.registers > 0 and k.spills == 0


@needs_legacy
@pytest.mark.parametrize("arch", ["sm_70", "sm_72"])
def test_shared_memory_kernel_builds_for_old_archs(arch):
    """CUDA C -> NVRTC 12 -> PTX -> ptxas 12 -> cubin, with shared memory and barriers (which NVPTX cannot)."""
    b = cb.compile_fatbin(_shared_memory_kernel(arch), arch)
    assert b.fmt == "fatbin" and cb.ELF_MAGIC in b.data and cb.fatbin_images(b.data) == ["cubin", "ptx"]
    (k,) = b.kernels.values()
    assert k.shared_bytes > 0 and k.registers > 0


def test_missing_legacy_extra_names_it(monkeypatch):
    monkeypatch.setattr(cb, "_nvidia_package_dir", lambda name: None)
    with pytest.raises(LasnetError, match=r"lasnet-tvm\[cuda-legacy\]"):
        build_target("cuda -arch=sm_72")
    with pytest.raises(LasnetError, match="cuda-legacy"):
        cb.compile_fatbin("__global__ void k() {}", "sm_70")


def test_ptxas_report_parsing():
    text = """ptxas info    : Compiling entry function 'a_kernel' for 'sm_90'
ptxas info    : Function properties for a_kernel
    8 bytes stack frame, 12 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 9216 bytes smem, 368 bytes cmem[0]
ptxas info    : Compiling entry function 'b_kernel' for 'sm_90'
ptxas info    : Function properties for b_kernel
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 10 registers, used 0 barriers, 368 bytes cmem[0]
"""
    r = cb.parse_ptxas_report(text)
    assert (r["a_kernel"].registers, r["a_kernel"].shared_bytes, r["a_kernel"].spills) == (255, 9216, 16)
    assert (r["b_kernel"].registers, r["b_kernel"].shared_bytes, r["b_kernel"].spills) == (10, 0, 0)


def _inspect_json(path):
    res = CliRunner().invoke(cli, ["inspect", str(path), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_inspect_reports_every_kernel(sm90_library):
    report = _inspect_json(sm90_library)
    assert report["binary"] == "cubin" and report["arch"] == "sm_90"
    names = {k["name"] for k in report["kernels"]}
    assert names == set(cb.read_device_modules(sm90_library)[0].kernels)
    for k in report["kernels"]:
        assert {"name", "conv", "shared_bytes", "registers", "spills", "outputs_per_thread"} <= set(k)
        assert isinstance(k["registers"], int) and k["registers"] > 0, k
    conv = [k for k in report["kernels"] if k["conv"]]
    assert any(k["name"].startswith("gather_conv3x3") for k in conv)
    gather = next(k for k in conv if k["name"].startswith("gather_conv3x3"))
    assert "P" in " ".join(gather["grid"])  # one block per active patch (or a function of P)
    text = CliRunner().invoke(cli, ["inspect", str(sm90_library)])
    assert text.exit_code == 0 and "gather_conv3x3" in text.output and "cubin" in text.output.splitlines()[0]


def test_every_conv_kernel_is_tiled(sm90_library):
    conv = [k for k in _inspect_json(sm90_library)["kernels"] if k["conv"]]
    bad = [k["name"] for k in conv
           if not (k["shared_bytes"] > 0 and (k["outputs_per_thread"] or 0) > 1 and k["spills"] == 0)]
    assert not bad, f"conv kernels without shared memory, a register tile, or with spills: {bad}"


def test_inspect_refuses_cpu_library_and_junk(tmp_path):
    junk = tmp_path / "x.so"
    junk.write_bytes(b"not a library")
    res = CliRunner().invoke(cli, ["inspect", str(junk)])
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1


_CUDA_STUB = "\n".join(f"int {name}() {{ return 1; }}" for name in (
    "cuDeviceGetName", "cuFuncSetAttribute", "cuLaunchKernelEx", "cuModuleGetFunction", "cuModuleLoadData",
    "cuTensorMapEncodeTiled")) + """
int cuModuleUnload() { return 0; }
int cuGetErrorName(int e, const char **s) { *s = "CUDA_ERROR_STUB"; return 0; }
int cuGetErrorString(int e, const char **s) { *s = "stub libcuda (no GPU)"; return 0; }
"""
_LOAD = """
import sys, tvm, tvm_ffi
assert "ffi.Module.load_from_bytes.cuda" in tvm_ffi.registry.list_global_func_names(), "no CUDA runtime"
try:
    mod = tvm.runtime.load_module(sys.argv[1])
except Exception as e:
    print("FAILED", str(e).strip().splitlines()[-1][:200])
else:
    kinds = []
    def walk(m):
        for i in m.imports:
            kinds.append(i.kind)
            walk(i)
    walk(mod)
    print("LOADED", *kinds)
"""


@needs_nvcc
def test_tvm_runtime_loads_the_library_without_a_compiler(tmp_path):
    """TVM's CUDA runtime (with libcudart, and a stub libcuda standing in for the driver) reads the fatbin
    library's module table; TVM's own export, CUDA C, cannot even load where no NVRTC is installed."""
    import subprocess
    import sys
    from pathlib import Path

    import tvm

    roots = [Path(shutil.which("nvcc")).resolve().parent.parent, Path("/usr/local/cuda")]
    cudart = next((r / "lib64" for r in roots if (r / "lib64" / "libcudart.so.13").exists()), None)
    if cudart is None or shutil.which("gcc") is None:
        pytest.skip("libcudart.so.13 beside nvcc or gcc missing")
    (tmp_path / "stub.c").write_text(_CUDA_STUB)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(tmp_path / "libcuda.so.1"), str(tmp_path / "stub.c")],
                   check=True)
    p = SHAPES["gather_conv3x3"]
    mod = K.get("gather_conv3x3").schedule_cuda(K.builder("gather_conv3x3")(**p), **p).mod
    ex = tvm.compile(mod, target=tvm.target.Target({"kind": "cuda", "arch": "sm_90"}))
    ex.export_library(str(tmp_path / "fatbin.so"), fpack_imports=cb.binary_pack_imports("sm_90", []))
    ex.export_library(str(tmp_path / "source.so"))
    env = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": f"{tmp_path}:{cudart}", "HOME": str(tmp_path)}

    def load(name):
        r = subprocess.run([sys.executable, "-c", _LOAD, str(tmp_path / name)], capture_output=True, text=True,
                           timeout=300, env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout.strip().splitlines()[-1]

    assert load("fatbin.so") == "LOADED cuda"
    source = load("source.so")
    if not source.startswith("FAILED"):  # NVRTC (cuda-bindings) installed here: the source compiles at load
        assert source == "LOADED cuda"
