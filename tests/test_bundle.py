"""``lasnet-tvm bundle``: the bundle runs in a bare virtual environment (numpy only) with TVM's runtime only, and
agrees with ``lasnet-tvm run``; bad input gets one-line errors and leaves earlier results alone."""

import json
import shutil
import subprocess
import sys
import venv

import numpy as np
import pytest
from click.testing import CliRunner

from lasnet_tvm.checkpoint import save_checkpoint
from lasnet_tvm.cli.main import cli
from lasnet_tvm.deploy.runtime import TVM_COMPILER_LIB, copy_ffi
from lasnet_tvm.models import build_model
from model_utils import randomize_


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    """A fresh virtual environment without system site packages, holding only numpy (this numpy's version)."""
    env = tmp_path_factory.mktemp("bare") / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env)
    python = env / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", f"numpy=={np.__version__}"],
                   check=True, timeout=600)
    assert subprocess.run([python, "-c", "import tvm"], capture_output=True).returncode != 0  # no TVM there
    return python


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundle")
    model = randomize_(build_model("las_resnet50", "4-4-2-1", 64, 6, 0.25), seed=3)
    pt = save_checkpoint(d / "model.pt", model)
    res = invoke("bundle", pt, "--target", "llvm", "-o", d / "b", "--torch")
    assert res.exit_code == 0, res.output
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    np.save(d / "x.npy", x)
    return d


def run_py(python, bundle_dir, *args):
    """``python bundle/run.py ARGS`` in an environment without PYTHONPATH, from the bundle's parent folder."""
    return subprocess.run([str(python), str(bundle_dir / "run.py"), *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=bundle_dir.parent, env={"PATH": "/usr/bin:/bin"})


def test_bundle_has_no_compiler(bundle):
    b = bundle / "b"
    assert not list(b.rglob("*tvm_compiler*"))
    assert (b / "python/tvm/lib/libtvm_runtime.so").is_file() and (b / "model.so").is_file()
    info = json.loads((b / "bundle.json").read_text())
    assert info["python"] == f"{sys.version_info[0]}.{sys.version_info[1]}" and info["torch_models"]
    assert not (b / "python/tvm/relax").exists() and not (b / "python/tvm/src").exists()
    assert TVM_COMPILER_LIB == "libtvm_compiler.so"


def test_bundle_in_bare_env_equals_lasnet_tvm_run(bundle, bare_python):
    d, b = bundle, bundle / "b"
    res = run_py(bare_python, b, "--input", d / "x.npy", "-o", d / "y.npy", "--masks", d / "m.npz")
    assert res.returncode == 0, res.stderr
    for model, suffix in ((b / "model.so", "so"), (d / "model.pt", "pt")):
        ref = invoke("run", model, "--input", d / "x.npy", "-o", d / f"ref_{suffix}.npy", "--masks", d / f"ref_{suffix}.npz")
        assert ref.exit_code == 0, ref.output
    got, got_m = np.load(d / "y.npy"), np.load(d / "m.npz")
    # the same library under the full TVM: identical; the PyTorch model: equal to float32 rounding
    np.testing.assert_array_equal(got, np.load(d / "ref_so.npy"))
    np.testing.assert_allclose(got, np.load(d / "ref_pt.npy"), rtol=1e-5, atol=1e-5)
    for ref_m in (np.load(d / "ref_so.npz"), np.load(d / "ref_pt.npz")):
        assert sorted(got_m.files) == sorted(ref_m.files)
        for k in ref_m.files:
            np.testing.assert_array_equal(got_m[k], ref_m[k])


def test_bench_json_bare_and_with_torch(bundle, bare_python):
    b = bundle / "b"
    res = run_py(bare_python, b, "--bench", "--repeats", "2", "--json", bundle / "bare.json")
    assert res.returncode == 0, res.stderr
    bare = json.loads((bundle / "bare.json").read_text())
    assert bare["model"]["arch"] == "las_resnet50" and bare["where"]["tvm"]
    assert bare["median_ms"]["tvm_las"] > 0 and "torch is not installed" in bare["torch"]
    # this environment has torch: the PyTorch models the bundle carries are timed and the logits checked
    res = run_py(sys.executable, b, "--bench", "--repeats", "2", "--json", bundle / "torch.json")
    assert res.returncode == 0, res.stderr
    full = json.loads((bundle / "torch.json").read_text())
    assert full["check"]["ok"] and full["check"]["max_rel_err"] <= 1e-4
    assert set(full["median_ms"]) == {"tvm_las", "torch_static", "torch_las_dense"}


def _one_line_error(res, *words):
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and all(w in res.stderr for w in words), res.stderr


def test_run_py_bad_input(bundle, bare_python, tmp_path):
    b = bundle / "b"
    (tmp_path / "bad.npy").write_text("not an array")
    _one_line_error(run_py(bare_python, b, "--input", tmp_path / "bad.npy", "-o", tmp_path / "y.npy"),
                    "bad.npy", "not a .npy array")
    np.save(tmp_path / "small.npy", np.zeros((1, 3, 32, 32), np.float32))
    _one_line_error(run_py(bare_python, b, "--input", tmp_path / "small.npy", "-o", tmp_path / "y.npy"),
                    "takes 64x64 images")
    _one_line_error(run_py(bare_python, b, "--input", tmp_path / "none.npy", "-o", tmp_path / "y.npy"),
                    "none.npy: no such file")
    assert not (tmp_path / "y.npy").exists()
    other = tmp_path / "other"
    shutil.copytree(b, other)
    info = json.loads((other / "bundle.json").read_text())
    (other / "bundle.json").write_text(json.dumps({**info, "python": "3.99"}))
    _one_line_error(run_py(bare_python, other, "--bench"), "built for Python 3.99")


def test_bundle_bad_python_leaves_output_untouched(bundle, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / "bundle.json").write_text("an earlier bundle\n")
    for version, words in (("3.99", "cannot fetch apache-tvm-ffi"), ("3.8", "needs Python 3.10"),
                           ("python3", "expected a Python version X.Y")):
        res = invoke("bundle", bundle / "model.pt", "-o", out, "--python", version)
        assert res.exit_code != 0 and "Traceback" not in res.output
        assert len(res.output.strip().splitlines()) == 1 and words in res.output, res.output
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no temporary folder left beside it
    assert [p.name for p in out.iterdir()] == ["bundle.json"]
    assert (out / "bundle.json").read_text() == "an earlier bundle\n"
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    res = invoke("bundle", bundle / "model.pt", "-o", tmp_path / "notes")
    assert res.exit_code != 0 and "not a bundle" in res.output
    assert (tmp_path / "notes" / "a.txt").read_text() == "mine"


def test_ffi_wheel_for_another_python(tmp_path):
    other = "3.12" if sys.version_info[:2] != (3, 12) else "3.11"
    pkg = copy_ffi(tmp_path, other)
    tag = other.replace(".", "")
    assert list(pkg.glob(f"core.cpython-{tag}-*.so")) and (pkg / "lib").is_dir()
    local = f"{sys.version_info[0]}{sys.version_info[1]}"
    assert not (pkg / "include").exists() and not list(pkg.glob(f"core.cpython-{local}-*"))


def test_compile_with_separate_params_equals_embedded(bundle, tmp_path):
    lib = tmp_path / "sep.so"
    res = invoke("compile", bundle / "model.pt", "--params", "separate", "-o", lib)
    assert res.exit_code == 0 and (tmp_path / "sep.params.npz").is_file(), res.output
    assert lib.stat().st_size < (bundle / "b/model.so").stat().st_size / 2  # the weights are outside
    res = invoke("run", lib, "--input", bundle / "x.npy", "-o", tmp_path / "y.npy")
    assert res.exit_code == 0, res.output
    ref = invoke("run", bundle / "b/model.so", "--input", bundle / "x.npy", "-o", tmp_path / "ref.npy")
    assert ref.exit_code == 0, ref.output
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), np.load(tmp_path / "ref.npy"))
    (tmp_path / "sep.params.npz").rename(tmp_path / "elsewhere.npz")
    res = invoke("run", lib, "--input", bundle / "x.npy", "-o", tmp_path / "y2.npy")
    assert res.exit_code != 0 and "sep.params.npz are not beside it" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "y2.npy").exists()


def test_bundle_without_weights_benches_in_bare_env(bundle, bare_python, tmp_path):
    res = invoke("bundle", bundle / "model.pt", "--no-weights", "--torch", "-o", tmp_path / "nw")
    assert res.exit_code != 0 and "--torch or --no-weights" in res.output and not (tmp_path / "nw").exists()
    nw = tmp_path / "nw"
    nw.mkdir()
    (nw / "bundle.json").write_text("{}")  # an earlier bundle: replaced as a whole
    (nw / "stale.txt").write_text("old")
    res = invoke("bundle", bundle / "model.pt", "--no-weights", "--seed", "5", "-o", nw)
    assert res.exit_code == 0, res.output
    assert not (nw / "stale.txt").exists() and [p.name for p in tmp_path.iterdir()] == ["nw"]
    assert not list(nw.glob("*.npz")) and not list(nw.rglob("*tvm_compiler*"))
    info = json.loads((nw / "bundle.json").read_text())
    manifest = json.loads((nw / "model.json").read_text())
    assert info["random_weights"]["seed"] == 5 and list(info["random_weights"]["params"]) == manifest["params"]
    res = run_py(bare_python, nw, "--bench", "--repeats", "2", "--json", tmp_path / "nw.json")
    assert res.returncode == 0, res.stderr
    out = json.loads((tmp_path / "nw.json").read_text())
    assert "random (seed 5)" in out["weights"] and 0 <= out["activation_rate"] <= 1 and out["median_ms"]["tvm_las"] > 0
    _one_line_error(run_py(bare_python, nw, "--input", bundle / "x.npy", "-o", tmp_path / "y.npy"),
                    "carries no weights")


def _other_python():
    """An interpreter of another Python version (3.10 or newer) on this machine, the nearest newer one first."""
    from pathlib import Path

    local = sys.version_info[1]
    found = [shutil.which(f"python3.{m}") for m in range(10, 15)]
    found += [str(p) for p in Path.home().glob(".pyenv/versions/3.*/bin/python3")]
    versions = {}
    for exe in filter(None, found):
        try:
            out = subprocess.run([exe, "-c", "import sys; print(sys.version_info[1])"], capture_output=True,
                                 text=True, timeout=30)
        except OSError:
            continue
        if out.returncode == 0 and int(out.stdout) != local and int(out.stdout) >= 10:
            versions.setdefault(int(out.stdout), exe)
    if not versions:
        return None
    minor = min(versions, key=lambda m: (abs(m - local), -m))
    return versions[minor], f"3.{minor}"


def test_bundle_for_another_python_runs_there(bundle, tmp_path):
    other = _other_python()
    if other is None:
        pytest.skip("no interpreter of another Python version (3.10+) on this machine")
    exe, version = other
    res = invoke("bundle", bundle / "model.pt", "--python", version, "-o", tmp_path / "b")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "b/bundle.json").read_text())["python"] == version
    env = tmp_path / "venv"
    subprocess.run([exe, "-m", "venv", env], check=True, timeout=300)
    subprocess.run([env / "bin/python", "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    f"numpy=={np.__version__}"], check=True, timeout=600)
    res = run_py(env / "bin/python", tmp_path / "b", "--input", bundle / "x.npy", "-o", tmp_path / "y.npy")
    assert res.returncode == 0, res.stderr
    ref = invoke("run", tmp_path / "b/model.so", "--input", bundle / "x.npy", "-o", tmp_path / "ref.npy")
    assert ref.exit_code == 0, ref.output
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), np.load(tmp_path / "ref.npy"))
    _one_line_error(run_py(sys.executable, tmp_path / "b", "--bench"), f"built for Python {version}")
