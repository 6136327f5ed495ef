"""Bad input on the command line: every case a one-line error (exit 1; 2 for a usage error), no traceback, and
every file that was there before left byte-identical.

Parameters are refused by click types before anything runs; files are checked before any long work; outputs
are written atomically. Tests run as root here, so a read-only folder is simulated by a path under a regular
file (the folder cannot be created, ENOTDIR), which fails the same early check a missing write permission does.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat

import numpy as np
import pytest
import torch

from _bad_input import assert_one_line_error, fill, invoke, snapshot
from conftest import TINY_SIZE


# -- parameters: click types, usage errors (exit code 2) ----------------------------------------------------
@pytest.mark.parametrize("args, words", [
    (["bench", "model", "--rate", "nan", "--out", "o.json"], ["'--rate'", "nan is not a finite number"]),
    (["bench", "model", "--rate", "inf", "--out", "o.json"], ["'--rate'"]),
    (["bench", "model", "--rate", "-0.5", "--out", "o.json"], ["'--rate'", "-0.5"]),
    (["bench", "model", "--rate", "1.5", "--out", "o.json"], ["'--rate'", "1.5"]),
    (["bench", "model", "-g", "-1-4-2-1", "--out", "o.json"], ["'-g'", "'-1-4-2-1'"]),
    (["bench", "model", "--images", "0", "--out", "o.json"], ["'--images'"]),
    (["bench", "model", "--width-mult", "nan", "--out", "o.json"], ["'--width-mult'"]),
    (["bench", "block", "--ablation-rate", "nan"], ["'--ablation-rate'"]),
    (["bench", "block", "--repeats", "0"], ["'--repeats'"]),
    (["bench", "compare", "a.so", "--repeats", "0", "--out", "o.json"], ["'--repeats'"]),
    (["bench", "rate", "--quick", "--width-mult", "inf"], ["'--width-mult'"]),
    (["bench", "granularity", "--quick", "--tolerance", "nan"], ["'--tolerance'"]),
    (["verify", "m.pt", "m.so", "--samples", "0"], ["'--samples'", "0"]),
    (["predict", "-g", "-1-4-2-1"], ["'-g'"]),
    (["predict", "-g", "4--4-2-1"], ["'-g'"]),
    (["predict", "--rate", "nan"], ["activation rate nan"]),
    (["predict", "--rate", "0.5,inf"], ["activation rate inf"]),
    (["predict", "--batch", "0"], ["'--batch'"]),
    (["train", "-S", "-1-4-2-1"], ["'-S'"]),
    (["train", "--lr", "nan"], ["'--lr'"]),
    (["train", "--width-mult", "0"], ["'--width-mult'"]),
    (["train", "--target", "1.5"], ["'--target'"]),
    (["train", "--epochs", "0"], ["'--epochs'"]),
    (["convert", "x.pth", "--arch", "las_resnet50", "-g", "4-4-2-1,", "-o", "m.pt"], ["'-g'"]),
    (["tune", "--device", "local", "--arch", "las_resnet50", "-g", "4-4-2-1", "--rate", "0"], ["'--rate'"]),
    (["tune", "--device", "local", "--arch", "las_resnet50", "-g", "4-4-2-1", "--timeout", "nan"], ["'--timeout'"]),
    (["calibrate", "-o", "x.yaml", "--rounds", "0"], ["'--rounds'"]),
])
def test_bad_parameter_is_one_line_usage_error(tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    before = fill(tmp_path, "o.json", "m.pt")
    res = invoke(*args)
    line = assert_one_line_error(res, *words, code=2)
    assert "--help" in line  # names where to look
    assert snapshot(tmp_path) == before


def test_unknown_option_is_one_line_usage_error():
    assert_one_line_error(invoke("run", "--bogus"), "--bogus", code=2)
    assert_one_line_error(invoke("nosuchcommand"), "nosuchcommand", code=2)


# -- model files that are not checkpoints -------------------------------------------------------------------
def _not_models(folder, compiled_tiny):
    _, pt, so, _ = compiled_tiny()
    (folder / "dir.pt").mkdir()
    (folder / "text.pt").write_text("hello, this is text\n")
    (folder / "empty.pt").write_bytes(b"")
    shutil.copy(so, folder / "lib.so")
    shutil.copy(so.with_suffix(".json"), folder / "lib.json")
    data = pt.read_bytes()
    (folder / "cut.pt").write_bytes(data[: len(data) // 2])
    (folder / "cut_end.pt").write_bytes(data[:-10])
    return {"dir.pt": "is a directory", "text.pt": "not a PyTorch checkpoint (a text file)",
            "empty.pt": "not a PyTorch checkpoint (an empty file)",
            "lib.so": "not a PyTorch checkpoint (a shared library",
            "lib.json": "not a PyTorch checkpoint (a JSON/text file)",
            "cut.pt": "corrupt or truncated checkpoint (torch.load cannot read it)",
            "cut_end.pt": "corrupt or truncated checkpoint (torch.load cannot read it)"}


@pytest.mark.parametrize("command", ["compile", "masks", "run"])
def test_not_a_checkpoint_says_what_it_is(tmp_path, compiled_tiny, command):
    cases = _not_models(tmp_path, compiled_tiny)
    np.save(tmp_path / "x.npy", np.zeros((1, 3, TINY_SIZE, TINY_SIZE), np.float32))
    (tmp_path / "img.png").write_bytes(b"")
    before = snapshot(tmp_path)
    for name, words in cases.items():
        if command == "run" and name == "lib.so":
            continue  # run loads a .so as a compiled library (test_bad_input_library)
        model = tmp_path / name
        args = {"compile": ["compile", model, "-o", tmp_path / "out.so"],
                "masks": ["masks", model, tmp_path / "img.png", "-o", tmp_path / "out.png"],
                "run": ["run", model, "--input", tmp_path / "x.npy", "-o", tmp_path / "out.npy"]}[command]
        line = assert_one_line_error(invoke(*args), f"{name}: {words}")
        assert "could run code" not in line and "no such file" not in line
        assert not line.endswith(("(", " ")), line  # a whole sentence, not cut
    assert snapshot(tmp_path) == before


def test_target_flag_without_target(tmp_path, compiled_tiny):
    _, pt, _, _ = compiled_tiny()
    res = invoke("compile", pt, "-arch=sm_70", "-o", tmp_path / "m.so")
    assert_one_line_error(res, "-arch=sm_70 is a target flag", "--target cuda -arch=sm_70")
    assert not list(tmp_path.iterdir())


# -- input arrays ----------------------------------------------------------------------------------------------
BAD_INPUTS = {
    "empty": (np.zeros((0, 3, TINY_SIZE, TINY_SIZE), np.float32), "no images"),
    "nan": (np.full((2, 3, TINY_SIZE, TINY_SIZE), np.nan, np.float32), "NaN"),
    "inf": (np.pad(np.full((1, 3, TINY_SIZE, TINY_SIZE - 1), 1.0, np.float32), [(0, 0)] * 3 + [(0, 1)],
                   constant_values=np.inf), "infinite"),
    "too_big_for_float32": (np.full((1, 3, TINY_SIZE, TINY_SIZE), 1e300), "12288 too large for float32 value(s)"),
    "int8": (np.ones((1, 3, TINY_SIZE, TINY_SIZE), np.int8), "dtype is int8"),
    "uint8": (np.ones((1, 3, TINY_SIZE, TINY_SIZE), np.uint8), "dtype is uint8"),
    "bool": (np.ones((1, 3, TINY_SIZE, TINY_SIZE), bool), "dtype is bool"),
    "rgba": (np.ones((1, 4, TINY_SIZE, TINY_SIZE), np.float32), "expected [N, 3, H, W]"),
    "size": (np.ones((1, 3, 32, 32), np.float32), "takes 64x64 images"),
}


@pytest.mark.parametrize("kind", ["pt", "so"])
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_array_is_refused_alike(tmp_path, compiled_tiny, kind, case):
    _, pt, so, _ = compiled_tiny()
    x, words = BAD_INPUTS[case]
    np.save(tmp_path / "x.npy", x)
    before = fill(tmp_path / "out", "logits.npy", "masks.npz")
    res = invoke("run", pt if kind == "pt" else so, "--input", tmp_path / "x.npy",
                 "-o", tmp_path / "out" / "logits.npy", "--masks", tmp_path / "out" / "masks.npz")
    assert_one_line_error(res, words)
    assert snapshot(tmp_path / "out") == before


def test_input_file_problems(tmp_path, compiled_tiny):
    _, pt, _, _ = compiled_tiny()
    np.savez(tmp_path / "arch.npz", x=np.zeros((1, 3, TINY_SIZE, TINY_SIZE), np.float32))
    (tmp_path / "cut.npy").write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr'")
    (tmp_path / "d.npy").mkdir()
    for name, words in [("arch.npz", "not a .npy array"), ("cut.npy", "not a .npy array"),
                        ("d.npy", "is a directory"), ("none.npy", "no such file")]:
        assert_one_line_error(invoke("run", pt, "--input", tmp_path / name, "-o", tmp_path / "l.npy"), name, words)
    assert not (tmp_path / "l.npy").exists()


def test_float64_and_float16_inputs_run_as_float32(tmp_path, compiled_tiny):
    """Documented conversion: float16/float64 images are rounded to float32 (what both backends compute in)."""
    model, pt, _, _ = compiled_tiny()
    x = np.random.default_rng(0).standard_normal((1, 3, TINY_SIZE, TINY_SIZE))
    for dtype in (np.float64, np.float16):
        np.save(tmp_path / "x.npy", x.astype(dtype))
        res = invoke("run", pt, "--input", tmp_path / "x.npy", "-o", tmp_path / "l.npy")
        assert res.exit_code == 0, res.output
        with torch.no_grad():
            ref = model(torch.from_numpy(x.astype(dtype).astype(np.float32))).numpy()
        np.testing.assert_allclose(np.load(tmp_path / "l.npy"), ref, rtol=1e-5, atol=1e-5)


# -- outputs that cannot be written: checked before the work, nothing changed --------------------------------
def _blocked(tmp_path):
    """A folder holding earlier results and a regular file ``blocker``: paths under it cannot be written."""
    out = tmp_path / "out"
    before = fill(out, "blocker", "results.json", "model.pt")
    return out, out / "blocker", before


def _writers(tmp_path, blocker, pt, so):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 3, TINY_SIZE, TINY_SIZE), np.float32))
    img = tmp_path / "img.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    b = blocker
    return {
        "compile": ["compile", pt, "-o", b / "m.so"],
        "run": ["run", pt, "--input", x, "-o", b / "l.npy"],
        "run --masks": ["run", pt, "--input", x, "-o", tmp_path / "out" / "l.npy", "--masks", b / "m.npz"],
        "train": ["train", "--width-mult", "0.25", "--input-size", "64", "-o", b / "m.pt"],
        "convert": ["convert", pt, "--arch", "las_resnet50", "-g", "4-4-2-1", "-o", b / "m.pt"],
        "masks": ["masks", pt, img, "-o", b / "masks.png"],
        "bench model": ["bench", "model", "--width-mult", "0.25", "--input-size", "64", "--out", b / "r.json"],
        "bench model --save-model": ["bench", "model", "--out", tmp_path / "out" / "r.json", "--save-model",
                                     b / "m.pt"],
        "bench compare": ["bench", "compare", so, so, "--out", b / "r.json"],
        "bench block": ["bench", "block", "--out", b / "r.json"],
        "bench rate": ["bench", "rate", "--quick", "--device", "xeon-6248", "--out", b / "results"],
        "profile-device": ["profile-device", "-o", b / "p.yaml"],
        "calibrate": ["calibrate", "--device", "xeon-6248", "--quick", "-o", b / "p.yaml"],
        "calibrate --json": ["calibrate", "--device", "xeon-6248", "--quick", "-o", tmp_path / "out" / "p.yaml",
                             "--json", b / "r.json"],
        "tune --json": ["tune", "--device", "local", "--arch", "las_resnet50", "-g", "4-4-2-1", "--no-measure",
                        "--json", b / "t.json"],
        "tune --export": ["tune", "--device", "local", "--arch", "las_resnet50", "-g", "4-4-2-1", "--no-measure",
                          "--export", b / "chosen"],
    }


WRITERS = ["compile", "run", "run --masks", "train", "convert", "masks", "bench model", "bench model --save-model",
           "bench compare", "bench block", "bench rate", "profile-device", "calibrate", "calibrate --json",
           "tune --json", "tune --export"]


@pytest.mark.parametrize("command", WRITERS)
def test_unwritable_output_fails_before_the_work(tmp_path, compiled_tiny, command, monkeypatch):
    _, pt, so, _ = compiled_tiny()
    out, blocker, before = _blocked(tmp_path)
    args = _writers(tmp_path, blocker, pt, so)[command]
    # the work must not start: any of these being called fails the test
    import lasnet_tvm.compiler as compiler
    import lasnet_tvm.runner as runner

    def never(*a, **k):
        raise AssertionError("the work started before the output path was checked")

    monkeypatch.setattr(compiler, "compile_checkpoint", never)
    monkeypatch.setattr(runner, "run_model", never)
    res = invoke(*args)
    line = assert_one_line_error(res, "blocker", "cannot write", "blocker is a file, not a folder")
    assert "AssertionError" not in line
    assert snapshot(out) == before


def test_output_that_is_a_directory(tmp_path, compiled_tiny):
    _, pt, _, _ = compiled_tiny()
    np.save(tmp_path / "x.npy", np.zeros((1, 3, TINY_SIZE, TINY_SIZE), np.float32))
    (tmp_path / "l.npy").mkdir()
    assert_one_line_error(invoke("run", pt, "--input", tmp_path / "x.npy", "-o", tmp_path / "l.npy"),
                          "l.npy: is a directory")


# -- interrupted or failing in the middle: nothing lost --------------------------------------------------------
INTERRUPTED = {  # command -> (module and function interrupted, files written before, arguments)
    "calibrate": ("lasnet_tvm.predictor.calibrate", "measure", ("p.yaml", "r.json"),
                  ["calibrate", "--device", "xeon-6248", "--quick", "-o", "{d}/p.yaml", "--json", "{d}/r.json"]),
    "bench model": ("lasnet_tvm.benchmarks.model", "run", ("r.json", "m.pt"),
                    ["bench", "model", "--width-mult", "0.25", "--input-size", "64", "--out", "{d}/r.json",
                     "--save-model", "{d}/m.pt"]),
    "bench rate": ("lasnet_tvm.benchmarks.rate", "run",
                   ("rate_las_resnet50_cpu_quick.json", "rate_las_resnet50_cpu_quick.png"),
                   ["bench", "rate", "--quick", "--device", "xeon-6248", "--target", "llvm", "--out", "{d}"]),
}


@pytest.mark.parametrize("command", list(INTERRUPTED))
def test_interrupted_command_keeps_earlier_results(tmp_path, monkeypatch, command):
    import importlib

    module, function, files, args = INTERRUPTED[command]

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module(module), function, interrupted)
    before = fill(tmp_path, *files)
    res = invoke(*[a.format(d=tmp_path) for a in args])
    assert_one_line_error(res, "interrupted", progress=True)
    assert snapshot(tmp_path) == before


def test_interrupted_tune_keeps_earlier_report(tmp_path, monkeypatch):
    import lasnet_tvm.tuning as tuning

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(tuning, "tune", interrupted)
    before = fill(tmp_path, "t.json")
    res = invoke("tune", "--device", "local", "--arch", "las_resnet50", "-g", "4-4-2-1", "--input-size", "64",
                 "--width-mult", "0.25", "--stage", "1", "--no-measure", "--work-dir", tmp_path / "db",
                 "--json", tmp_path / "t.json")
    assert_one_line_error(res, "interrupted", progress=True)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("failure", [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")])
def test_compile_failing_while_saving_keeps_earlier_library(tmp_path, compiled_tiny, monkeypatch, failure):
    """The library is exported to a temporary file, then the save fails (interrupt, full disk): the earlier
    library and manifest stay byte-identical and no temporary file is left."""
    import lasnet_tvm.compiler as compiler
    import lasnet_tvm.compiler.artifact as artifact

    _, pt, so, result = compiled_tiny()
    shutil.copy(so, tmp_path / "m.so")
    shutil.copy(so.with_suffix(".json"), tmp_path / "m.json")
    before = snapshot(tmp_path)
    monkeypatch.setattr(compiler, "compile_model", lambda *a, **k: result)  # the compile itself is not tested here

    def fail(path):
        raise failure

    monkeypatch.setattr(artifact, "file_digest", fail)
    res = invoke("compile", pt, "-o", tmp_path / "m.so")
    assert_one_line_error(res, "interrupted" if isinstance(failure, KeyboardInterrupt) else "no space left")
    assert snapshot(tmp_path) == before


# -- written files: mode, user profiles ----------------------------------------------------------------------
def test_outputs_are_readable_by_others(tmp_path, compiled_tiny):
    from lasnet_tvm.records import write_json

    _, pt, so, _ = compiled_tiny()
    old = os.umask(0o022)
    try:
        np.save(tmp_path / "x.npy", np.zeros((1, 3, TINY_SIZE, TINY_SIZE), np.float32))
        res = invoke("run", pt, "--input", tmp_path / "x.npy", "-o", tmp_path / "l.npy", "--masks", tmp_path / "m.npz")
        assert res.exit_code == 0, res.output
        write_json(tmp_path / "r.json", {"a": 1})
        from lasnet_tvm.cli.calibrate import write_profile
        from lasnet_tvm.predictor import get_profile

        hw = get_profile("xeon-6248")
        write_profile(tmp_path / "p.yaml", hw.with_(calibration={"source_profile": "xeon-6248", "date": "today"}))
        for name in ("l.npy", "m.npz", "r.json", "p.yaml"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    finally:
        os.umask(old)
    for path in (pt, so, so.with_suffix(".json")):  # written by save_checkpoint / save_artifact under pytest's umask
        assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, path


def test_user_profile_is_found_as_device(tmp_path, monkeypatch):
    from lasnet_tvm.predictor.profiles import shipped_profiles

    folder = tmp_path / "profiles"
    folder.mkdir()
    monkeypatch.setenv("LASNET_TVM_PROFILES", str(folder))
    text = shipped_profiles()["xeon-6248"].read_text().replace("name: xeon-6248", "name: mine")
    (folder / "mine.yaml").write_text(text)
    res = invoke("predict", "--device", "mine", "--arch", "las_resnet50")
    assert res.exit_code == 0 and "on mine" in res.stdout, res.output
    res = invoke("devices")
    row = [line for line in res.stdout.splitlines() if line.startswith("mine ")]
    assert row and " user " in row[0], res.stdout
    assert_one_line_error(invoke("predict", "--device", "yours"), "unknown device 'yours'", "mine")


def test_profile_device_writes_to_the_user_profile_folder(tmp_path, monkeypatch):
    import lasnet_tvm.predictor.profiles as profiles
    from lasnet_tvm.predictor.profiles import shipped_profiles

    folder = tmp_path / "profiles"
    monkeypatch.setenv("LASNET_TVM_PROFILES", str(folder))
    src = shipped_profiles()["xeon-6248"].read_text().replace("name: xeon-6248", "name: local")
    monkeypatch.setattr(profiles, "write_local_profile", lambda path: path.write_text(src) and path)
    res = invoke("profile-device")
    assert res.exit_code == 0, res.output
    assert (folder / "local.yaml").read_text() == src and str(folder / "local.yaml") in res.stdout
    assert sorted(p.name for p in folder.iterdir()) == ["local.yaml"]
    res = invoke("predict", "--device", "local", "--arch", "las_resnet50")
    assert res.exit_code == 0 and "on local" in res.stdout, res.output
