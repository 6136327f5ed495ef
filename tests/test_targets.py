"""Target presets and CUDA code generation (no GPU needed: source, cubin via nvcc, PTX via NVPTX)."""

from __future__ import annotations

import re
import shutil

import pytest
import tvm

from lasnet_tvm import kernels as K
from lasnet_tvm.errors import LasnetError
from lasnet_tvm.targets import (CUDA_ARCHS, build_cuda, cuda_root, cuda_source, host_cpu, resolve_target,
                                target_kind)

SHAPES = {
    "masker_conv1x1": dict(C_in=16, C_mid=8, H=13, W=13, S=4, stride=1),
    "gather_conv3x3": dict(C=16, H=13, W=13, S=4, stride=1, groups=2),
    "patch_conv1x1": dict(C_in=8, C_out=16, S=4),
    "scatter_add": dict(C=16, Ho=13, Wo=13, S=4),
    "se": dict(C=8, R=4, Ho=13, S=4),
    "masker": dict(C_in=16, H=13, W=13, S=4, stride=1),
    "gather": dict(C=8, H=13, W=13, S=4, stride=1),
    "window_conv3x3": dict(C=8, S=4, stride=1, groups=1),
    "scatter": dict(C=16, Ho=13, Wo=13, S=4),
    "add_relu": dict(C=16, H=13, W=13),
    "conv1x1": dict(C_in=16, C_out=8, H=13, W=13, stride=2, relu=False),
    "conv3x3": dict(C=8, H=13, W=13, stride=1, groups=1),
    "se_dense": dict(C=8, R=4, H=13, W=13),
    "zero_border": dict(C=8, H=13, W=13, Hq=16, Wq=16),
    "gather_conv1x1": dict(C_in=16, C_out=8, H=13, W=13, S=4, stride=1),
}


def test_resolve_llvm_variants():
    t = resolve_target("llvm")
    assert t.kind.name == "llvm" and str(t.attrs["mcpu"]) == host_cpu()
    t = resolve_target("llvm -mtriple=aarch64-linux-gnu")
    assert str(t.attrs["mtriple"]) == "aarch64-linux-gnu"
    assert str(resolve_target("llvm -mcpu=skylake").attrs["mcpu"]) == "skylake"
    assert str(resolve_target('{"kind": "llvm", "mcpu": "native"}').attrs["mcpu"]) == host_cpu()
    assert resolve_target({"kind": "llvm"}).kind.name == "llvm"
    assert target_kind("llvm") == "cpu"


def test_resolve_cuda_variants():
    assert str(resolve_target("cuda -arch=sm_70").attrs["arch"]) == "sm_70"
    assert resolve_target("cuda").kind.name == "cuda"
    tx2 = resolve_target("nvidia/jetson-tx2")
    assert str(tx2.attrs["arch"]) == "sm_62" and target_kind(tx2) == "cuda"


@pytest.mark.parametrize("bad", ["cuda -arch=sm_99", "tpu", "llvm -mcpu", "llvm -foo=bar", "{not json",
                                 "nvidia/no-such-board", "", '{"mcpu": "x"}', 3])
def test_resolve_errors_are_one_line(bad):
    with pytest.raises(LasnetError) as e:
        resolve_target(bad)
    assert "\n" not in str(e.value)


def _scheduled(name):
    mod = K.get(name)
    return mod.schedule_cuda(K.builder(name)(**SHAPES[name]), **SHAPES[name]).mod


@pytest.mark.parametrize("arch", CUDA_ARCHS)
def test_cuda_source_for_every_arch(arch):
    """CUDA C is generated for every arch (sm_53..sm_90) and holds a real kernel."""
    for name in ("gather_conv3x3", "masker_conv1x1", "scatter_add"):
        src = cuda_source(_scheduled(name), arch)
        assert "__global__" in src and "blockIdx.x" in src, name


@pytest.mark.parametrize("name", list(SHAPES))
def test_every_kernel_has_a_cuda_kernel(name):
    assert "__global__" in cuda_source(_scheduled(name), "sm_80")


def test_unscheduled_function_is_rejected():
    """An unscheduled function would silently build host-only: both helpers refuse it."""
    func = K.builder("add_relu")(**SHAPES["add_relu"])
    with pytest.raises(Exception):
        cuda_source(tvm.IRModule({"main": func}), "sm_80")
    with pytest.raises(Exception):
        build_cuda(tvm.IRModule({"main": func}), "sm_80")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("arch", ["sm_75", "sm_90"])
def test_nvcc_builds_cubin(arch):
    fmt, cubin = build_cuda(_scheduled("gather_conv3x3"), arch)
    assert fmt == "cubin" and cubin[:4] == b"\x7fELF"  # a cubin is an ELF image


@pytest.mark.skipif(cuda_root() is None, reason="no CUDA root with nvvm/libdevice")
@pytest.mark.parametrize("arch", ["sm_53", "sm_62", "sm_70", "sm_72"])
def test_nvptx_emits_ptx(arch):
    fmt, ptx = build_cuda(_scheduled("gather"), arch)  # a kernel without shared memory (no barrier)
    assert fmt == "ptx"
    assert f".target {arch}" in ptx and ".visible .entry main_kernel(" in ptx


@pytest.mark.skipif(cuda_root() is None or shutil.which("ptxas") is None, reason="no ptxas / libdevice")
def test_nvptx_ptx_assembles(tmp_path):
    """The (entry-fixed) PTX is accepted by ptxas; retargeted to sm_75 since CUDA 13's ptxas has no sm_62."""
    import subprocess

    _, ptx = build_cuda(_scheduled("gather"), "sm_62")
    f = tmp_path / "k.ptx"
    f.write_text(re.sub(r"\.version \d+\.\d+", ".version 6.4", ptx).replace(".target sm_62", ".target sm_75"))
    r = subprocess.run(["ptxas", "-arch=sm_75", str(f), "-o", str(tmp_path / "k.cubin")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cubin = (tmp_path / "k.cubin").read_bytes()
    assert cubin[:4] == b"\x7fELF" and b"main_kernel" in cubin


@pytest.mark.skipif(cuda_root() is None, reason="no CUDA root with nvvm/libdevice")
def test_nvptx_other_kernels():
    for name in ("scatter", "add_relu", "se_dense"):  # barrier-free kernels (the convs stage tiles in shared memory)
        fmt, ptx = build_cuda(_scheduled(name), "sm_62")
        assert ".target sm_62" in ptx, name


def test_build_cuda_unknown_arch():
    with pytest.raises(LasnetError, match="unknown CUDA arch"):
        build_cuda(_scheduled("add_relu"), "sm_99")
