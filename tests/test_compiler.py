"""The compiler: export, import, whole models against PyTorch, the CLI (the passes: tests/test_pass_*.py)."""

import json

import numpy as np
import pytest
import torch
import tvm
from click.testing import CliRunner

from _compiler import SIZE, reference, small_model, vm
from lasnet_tvm.checkpoint import save_checkpoint
from lasnet_tvm.cli.main import cli
from lasnet_tvm.compiler import CompiledModel, build_target, compile_model
from lasnet_tvm.compiler.artifact import save_artifact
from lasnet_tvm.compiler.export import export_model
from lasnet_tvm.compiler.importer import SPEC_ATTR, import_exported
from lasnet_tvm.errors import LasnetError
from lasnet_tvm.models import ARCHS, build_model
from lasnet_tvm.targets import resolve_target

LLVM = resolve_target("llvm")


def _check(compiled: CompiledModel, model, x):
    ref_logits, ref_masks = reference(model, x)
    got = compiled.run(x)
    scale = np.abs(ref_logits).max()
    np.testing.assert_allclose(got.logits, ref_logits, rtol=1e-4, atol=1e-4 * scale)
    for block, ref in zip(model.blocks, ref_masks):
        np.testing.assert_array_equal(got.masks[block.spec.name], ref)
    return got


def test_import_gives_one_function_per_block_and_runs_dense():
    model = small_model()
    mod = import_exported(export_model(model))
    blocks = [gv for gv, f in mod.functions_items() if f.attrs is not None and SPEC_ATTR in f.attrs]
    assert len(blocks) == len(model.blocks)
    x = np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    out = vm(mod)["main"](tvm.runtime.tensor(x))
    ref_logits, ref_masks = reference(model, x)
    np.testing.assert_allclose(out[0].numpy(), ref_logits, rtol=1e-4, atol=1e-4 * np.abs(ref_logits).max())
    np.testing.assert_array_equal(out[1].numpy(), [m.sum() for m in ref_masks])


@pytest.mark.parametrize("arch", ARCHS)
def test_compiled_model_matches_pytorch(arch):
    gran = "4-4-2-1" if arch.startswith("las_resnet") else "2-4-2-1"
    model = small_model(arch, gran, seed=3)
    compiled = CompiledModel.from_executable(*_compile(model))
    x = np.random.default_rng(4).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    got = _check(compiled, model, x)
    assert 0.0 < got.rates.mean() < 1.0


@pytest.mark.parametrize("bias,rate", [(-1.0, 0.0), (1.0, 1.0)])
def test_compiled_model_at_rate_zero_and_one(bias, rate):
    model = small_model(bias=bias, seed=5)
    compiled = CompiledModel.from_executable(*_compile(model))
    x = np.random.default_rng(6).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    got = _check(compiled, model, x)
    assert np.all(got.rates == rate)


@pytest.mark.parametrize("arch", ["las_resnet50", "las_regnety_800mf"])
def test_compiled_static_counterpart_matches_pytorch(arch):
    # RegNetY: conv1 (ReLU) and conv3 (residual epilogue) of a block whose widths are equal are distinct kernels
    # with equal parameter values
    model = small_model(arch, seed=7)
    result = compile_model(model, LLVM, static=True)
    compiled = CompiledModel.from_executable(result.executable, result.manifest)
    x = np.random.default_rng(8).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    static = model.static_counterpart()
    with torch.no_grad():
        ref = static(torch.from_numpy(x)).numpy()
    got = compiled.run(x)
    np.testing.assert_allclose(got.logits, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert np.all(got.rates == 1.0)


def _compile(model):
    r = compile_model(model, LLVM)
    return r.executable, r.manifest


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_cli_compile_verify_run(tmp_path):
    model = small_model(seed=9)
    pt = save_checkpoint(tmp_path / "model.pt", model)
    so = tmp_path / "model.so"
    res = invoke("compile", pt, "--target", "llvm", "-o", so)
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "model.json").read_text())
    assert manifest["arch"] == "las_resnet50" and manifest["fusion"] == "all" and manifest["input_size"] == SIZE
    res = invoke("verify", pt, so, "--samples", 2)
    assert res.exit_code == 0 and res.output.startswith("OK"), res.output
    x = np.random.default_rng(2).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    res = invoke("run", so, "--input", tmp_path / "x.npy", "-o", tmp_path / "logits.npy", "--masks", tmp_path / "m.npz")
    assert res.exit_code == 0, res.output
    ref_logits, ref_masks = reference(model, x)
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), ref_logits, rtol=1e-4, atol=1e-4 * np.abs(ref_logits).max())
    np.testing.assert_array_equal(np.load(tmp_path / "m.npz")["layer1.0"], ref_masks[0])
    # wrong input size at run time: a one-line error
    np.save(tmp_path / "bad.npy", np.zeros((1, 3, 32, 32), np.float32))
    res = invoke("run", so, "--input", tmp_path / "bad.npy", "-o", tmp_path / "l2.npy")
    assert res.exit_code != 0 and "takes 64x64 images" in res.output and "Traceback" not in res.output


def test_cli_compile_dump_ir(tmp_path):
    """--dump-ir writes the module after import and after each pass of the pipeline, numbered in its order."""
    from lasnet_tvm.compiler.pipeline import lasnet_passes, phase_file

    pt = save_checkpoint(tmp_path / "model.pt", small_model(seed=1))
    (tmp_path / "taken").write_text("")
    res = invoke("compile", pt, "-o", tmp_path / "m.so", "--dump-ir", tmp_path / "taken")
    assert res.exit_code != 0 and "is a file" in res.output and "Traceback" not in res.output
    res = invoke("compile", pt, "-o", tmp_path / "m.so", "--dump-ir", tmp_path / "ir")
    assert res.exit_code == 0, res.output
    names = ["00_import.py"] + [phase_file(i, p.info.name) for i, p in enumerate(lasnet_passes(LLVM), 1)]
    assert names[6] == "06_lower_las_blocks.py" and names[-1] == "11_schedule_static_ops.py"
    assert sorted(f.name for f in (tmp_path / "ir").iterdir()) == names
    ir = {n: (tmp_path / "ir" / n).read_text() for n in names}
    assert "def las_block_0(" in ir[names[0]] and '"lasnet.spec"' in ir[names[0]] and "@T.prim_func" not in ir[names[0]]
    assert "def gather_conv3x3_" not in ir[names[5]] and '"lasnet.spec"' in ir[names[5]]  # before the lowering
    lowered = ir["06_lower_las_blocks.py"]
    assert "def gather_conv3x3_" in lowered and "def scatter_add_" in lowered and '"lasnet.spec"' not in lowered
    assert ir[names[9]] == ir[names[8]]  # no tuned schedules: ApplyTunedSchedules leaves the module alone
    assert '"tir.is_scheduled"' not in ir[names[8]]
    last = ir[names[-1]]
    assert last.count("@T.prim_func") == last.count('"tir.is_scheduled"') > 10  # every function scheduled


def test_cli_compile_errors(tmp_path):
    res = invoke("compile", tmp_path / "missing.pt", "-o", tmp_path / "m.so")
    assert res.exit_code != 0 and "missing.pt: no such file" in res.output
    pt = save_checkpoint(tmp_path / "model.pt", small_model())
    res = invoke("compile", pt, "--target", "cuda", "-arch=sm_99", "-o", tmp_path / "m.so")
    assert res.exit_code != 0 and "unknown CUDA arch 'sm_99'" in res.output
    res = invoke("compile", pt, "--target", "vulkan", "-o", tmp_path / "m.so")
    assert res.exit_code != 0 and "unknown target kind 'vulkan'" in res.output
    assert not (tmp_path / "m.so").exists()
    (tmp_path / "junk.so").write_bytes(b"junk")
    np.save(tmp_path / "x.npy", np.zeros((1, 3, SIZE, SIZE), np.float32))
    res = invoke("run", tmp_path / "junk.so", "--input", tmp_path / "x.npy", "-o", tmp_path / "l.npy")
    assert res.exit_code != 0 and "no manifest" in res.output


def test_dense_se_checkpoint_is_refused():
    model = build_model("las_regnety_400mf", "4-4-2-1", SIZE, 7, 0.5, se_pool="dense").eval()
    with pytest.raises(LasnetError, match="se-pool active"):
        export_model(model)


@pytest.mark.parametrize("arch", ["sm_70", "sm_80"])
def test_cuda_build_without_gpu(tmp_path, arch):
    """A whole model builds for an old arch (NVRTC 12 + ptxas 12) and a new one (nvcc) without a GPU, and its
    library holds each kernel as machine code plus PTX (a fatbin), no CUDA C to compile when loaded."""
    from lasnet_tvm.cuda_binary import fatbin_images, read_device_modules

    try:
        target = build_target(f"cuda -arch={arch}")
        assert target.kind.name == "cuda"
        result = compile_model(small_model(seed=11), target)
        save_artifact(result.executable, tmp_path / "m.so", result.manifest)
    except LasnetError as e:  # no CUDA toolchain (or, for sm_70, no cuda-legacy extra) on this machine
        pytest.skip(str(e))
    data = (tmp_path / "m.so").read_bytes()
    assert b"__global__" not in data
    (image,) = read_device_modules(tmp_path / "m.so")
    assert image.fmt == "fatbin" and fatbin_images(image.data) == ["cubin", "ptx"]
    assert any("gather_conv3x3" in k for k in image.kernels) and len(image.kernels) > 10
    assert result.manifest["device_code"]["arch"] == arch
