"""Bad compiled libraries and manifests, and a full disk: one-line errors, nothing lost.

Each library is checked against its manifest (size, sha256, ABI, TVM version, target) before TVM loads it, so a
truncated library (which TVM's loader maps and the process then dies of, SIGBUS) or the manifest of another
model is refused with a message. The SIGBUS and full-disk cases run the CLI in a child process: the first
because without the check the process dies, the second because it sets a file-size limit (RLIMIT_FSIZE: writes
past it fail with EFBIG, as on a full disk).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from _bad_input import assert_one_line_error, cli_process, fill, invoke, snapshot
from conftest import TINY_SIZE


@pytest.fixture()
def lib(tmp_path, compiled_tiny):
    """A copy of the tiny compiled model (``m.so`` + ``m.json``), its model.pt, an input and earlier outputs."""
    _, pt, so, _ = compiled_tiny()
    shutil.copy(so, tmp_path / "m.so")
    shutil.copy(so.with_suffix(".json"), tmp_path / "m.json")
    shutil.copy(so, tmp_path / "good.so")
    shutil.copy(so.with_suffix(".json"), tmp_path / "good.json")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((1, 3, TINY_SIZE, TINY_SIZE)).astype(np.float32))
    fill(tmp_path / "out", "logits.npy", "masks.npz", "cmp.json")
    return tmp_path, pt


def _manifest(folder):
    return json.loads((folder / "m.json").read_text())


def _set_manifest(folder, **changes):
    m = _manifest(folder)
    for k, v in changes.items():
        if v is None:
            m.pop(k, None)
        else:
            m[k] = v
    (folder / "m.json").write_text(json.dumps(m))


def _commands(folder, pt):
    out = folder / "out"
    return {
        "run": ["run", folder / "m.so", "--input", folder / "x.npy", "-o", out / "logits.npy", "--masks",
                out / "masks.npz"],
        "verify": ["verify", pt, folder / "m.so", "--samples", "1"],
        "bench compare": ["bench", "compare", folder / "good.so", folder / "m.so", "--repeats", "1", "--images", "1",
                          "--out", out / "cmp.json"],
    }


def test_truncated_library_is_refused_not_a_crash(lib):
    """Without the check TVM maps the truncated file and the process dies of SIGBUS (exit code -7 / 135)."""
    folder, pt = lib
    data = (folder / "m.so").read_bytes()
    (folder / "m.so").write_bytes(data[: len(data) // 2])
    before = snapshot(folder)
    res = cli_process(*_commands(folder, pt)["run"])
    assert_one_line_error(res, "m.so", "truncated")
    for name, args in _commands(folder, pt).items():
        if name != "run":
            assert_one_line_error(invoke(*args), "m.so", "truncated")
    assert snapshot(folder) == before


MANIFEST_CASES = {
    "not json": (lambda f: (f / "m.json").write_text("{not json"), "corrupt manifest"),
    "a list": (lambda f: (f / "m.json").write_text("[1, 2]"), "not a lasnet-tvm manifest"),
    "empty": (lambda f: (f / "m.json").write_bytes(b""), "corrupt manifest"),
    "binary": (lambda f: (f / "m.json").write_bytes(b"\xff\xfe\x00garbage"), "m.json"),
    "no grids": (lambda f: _set_manifest(f, grids=None), "field 'grids'"),
    "grids of another length": (lambda f: _set_manifest(f, grids=[4]), "1 grids"),
    "other abi": (lambda f: _set_manifest(f, abi=999), "abi 999"),
    "other tvm": (lambda f: _set_manifest(f, tvm="0.1.0"), "compiled with TVM 0.1.0"),
    "no checksum": (lambda f: _set_manifest(f, library=None), "records no checksum"),
    "other size": (lambda f: _set_manifest(f, library={**_manifest(f)["library"], "bytes": 12}), "records 12"),
    "other checksum": (lambda f: _set_manifest(f, library={**_manifest(f)["library"], "sha256": "0" * 64}),
                       "checksum differs"),
    "missing": (lambda f: (f / "m.json").unlink(), "no manifest m.json"),
    "library is a directory": (lambda f: ((f / "m.so").unlink(), (f / "m.so").mkdir()), "is a directory"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_bad_manifest_is_one_line_error(lib, case):
    folder, pt = lib
    change, words = MANIFEST_CASES[case]
    change(folder)
    before = snapshot(folder)
    for name, args in _commands(folder, pt).items():
        usage = case == "library is a directory" and name == "bench compare"  # click's dir_okay=False refuses it
        assert_one_line_error(invoke(*args), words, code=2 if usage else 1)
    assert snapshot(folder) == before


def test_manifest_of_another_model(lib, compiled_tiny):
    """A library with the manifest of another model beside it (say, copied from another compile)."""
    folder, pt = lib
    _, _, other, _ = compiled_tiny("las_regnety_400mf")
    shutil.copy(other.with_suffix(".json"), folder / "m.json")
    before = snapshot(folder)
    for args in _commands(folder, pt).values():
        assert_one_line_error(invoke(*args), "m.so", "not the library this manifest describes")
    assert snapshot(folder) == before


def test_verify_against_the_library_of_another_model(lib, compiled_tiny):
    folder, _ = lib
    _, other_pt, _, _ = compiled_tiny("las_regnety_400mf")
    res = invoke("verify", other_pt, folder / "m.so", "--samples", "1")
    assert_one_line_error(res, "m.so was compiled from another model than", "arch las_resnet50 vs las_regnety_400mf")


def test_cuda_library_on_a_host_without_cuda(lib):
    import tvm

    if tvm.cuda(0).exist:
        pytest.skip("this host has a CUDA device: the library would load")
    folder, pt = lib
    _set_manifest(folder, target={"kind": "cuda", "arch": "sm_70", "keys": ["cuda", "gpu"]})
    before = snapshot(folder)
    for args in _commands(folder, pt).values():
        assert_one_line_error(invoke(*args), "compiled for cuda (sm_70)", "no CUDA device")
    assert snapshot(folder) == before


def test_library_for_another_cpu_architecture(lib):
    folder, pt = lib
    from tvm.target import codegen

    other = "x86_64-linux-gnu" if str(codegen.llvm_get_system_triple()).startswith("aarch64") else "aarch64-linux-gnu"
    _set_manifest(folder, target={**_manifest(folder)["target"], "mtriple": other, "mcpu": "generic"})
    for args in _commands(folder, pt).values():
        assert_one_line_error(invoke(*args), f"compiled for {other.split('-')[0]}", "this machine is")


def test_library_for_a_cpu_with_instruction_sets_this_one_lacks(lib):
    """A library built with -mcpu of a newer CPU (here: the first of a few recent ones that has an instruction
    set this CPU lacks) would die of SIGILL; it is refused instead."""
    from lasnet_tvm.compiler.artifact import missing_cpu_features

    folder, pt = lib
    cpus = ["graniterapids", "sapphirerapids", "znver5", "znver4", "alderlake", "icelake-server", "skylake-avx512"]
    newer = next((c for c in cpus if missing_cpu_features({"kind": "llvm", "mcpu": c})[2]), None)
    if newer is None:
        pytest.skip("this CPU has every instruction set of the CPUs tried")
    _set_manifest(folder, target={**_manifest(folder)["target"], "mcpu": newer})
    for args in _commands(folder, pt).values():
        assert_one_line_error(invoke(*args), f"compiled for CPU {newer}", "this CPU")


@pytest.mark.parametrize("model", ["pt", "so"])
def test_full_disk_while_writing_outputs_keeps_both_earlier_files(lib, model):
    """``run --masks`` with a 4 KiB file-size limit: the logits fit, the masks do not; neither earlier file
    changes (the logits are not renamed into place before the masks are written) and no temporary is left."""
    folder, pt = lib
    out = folder / "out"
    before = snapshot(out)
    res = cli_process("run", pt if model == "pt" else folder / "m.so", "--input", folder / "x.npy",
                      "-o", out / "logits.npy", "--masks", out / "masks.npz", fsize=4096)
    assert_one_line_error(res, "masks.npz", "cannot write the masks", "too large")
    assert snapshot(out) == before


def test_full_disk_while_saving_checkpoint(tmp_path, compiled_tiny):
    """``convert`` under a file-size limit smaller than the checkpoint: the earlier model.pt stays."""
    import torch

    model, pt, _, _ = compiled_tiny()
    torch.save({"state_dict": model.state_dict()}, tmp_path / "official.pth")
    before = fill(tmp_path / "out", "model.pt")
    res = cli_process("convert", tmp_path / "official.pth", "--arch", "las_resnet50", "-g", "4-4-2-1",
                      "--input-size", TINY_SIZE, "-o", tmp_path / "out" / "model.pt", fsize=64 * 1024)
    assert_one_line_error(res, "model.pt", "cannot write the checkpoint")
    assert snapshot(tmp_path / "out") == before
