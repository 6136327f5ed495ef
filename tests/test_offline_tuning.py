"""Offline (air-gapped) tuning: build candidates here, measure them with ``measure.py`` in a bare numpy-only
environment, import the winners, and ``compile`` applies them (the manifest says so) with outputs equal to
PyTorch; bad results files get one-line errors and leave the database untouched."""

import json
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from model_utils import randomize_
from test_bundle import bare_python  # noqa: F401 - the numpy-only virtual environment fixture

from lasnet_tvm.checkpoint import save_checkpoint
from lasnet_tvm.cli.main import cli
from lasnet_tvm.errors import LasnetError
from lasnet_tvm.models import build_model
from lasnet_tvm.tuning import tasks_of_block
from lasnet_tvm.tuning.database import DB_FILES
from lasnet_tvm.tuning.offline import build_offline
from lasnet_tvm.tuning.offline_import import import_results
from lasnet_tvm.tuning.select import MARGIN

KERNELS = ("scatter_add", "patch_conv1x1")  # two small kernels of the last stage's LAS block


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _tasks(model):
    block = [b for b in model.spec.blocks if b.stage == 4][0]
    return [t for t in tasks_of_block(block, 0.5) if t.kernel in KERNELS]


def measure(python, folder):
    """``python folder/measure.py`` in an environment without PYTHONPATH, from the folder's parent."""
    res = subprocess.run([str(python), str(folder / "measure.py"), "--repeats", "7"], capture_output=True,
                         text=True, timeout=600, cwd=folder.parent, env={"PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    return json.loads((folder / "results.json").read_text())


def expected_imports(manifest, results) -> set:
    """Names of the tasks whose fastest candidate is not the default and beats it by MARGIN."""
    expect = set()
    for t in manifest["tasks"]:
        ms = {c["id"]: c["median_ms"] for c in results["tasks"][t["key"]]["candidates"]}
        best = min(ms, key=ms.get)
        if best != "default" and ms[best] <= (1 - MARGIN) * ms["default"]:
            expect.add(t["name"])
    return expect


@pytest.fixture(scope="module")
def model():
    return randomize_(build_model("las_resnet50", "4-4-2-1", 64, 6, 0.25), seed=3)


@pytest.fixture(scope="module")
def measured(tmp_path_factory, model, bare_python):  # noqa: F811
    """A first round of two tasks, three candidates each, measured by measure.py in the bare environment."""
    d = tmp_path_factory.mktemp("offline")
    lines = []
    manifest = build_offline(_tasks(model), "local", d / "o1", max_candidates=3, progress=False, echo=lines.append)
    assert "about" in lines[0] and "to build" in lines[0]  # the estimate comes first
    measure(bare_python, d / "o1")
    save_checkpoint(d / "model.pt", model)
    return d, manifest


def test_offline_folder_is_runtime_only(measured):
    d, manifest = measured
    o = d / "o1"
    assert not list(o.rglob("*tvm_compiler*")) and (o / "python/tvm/lib/libtvm_runtime.so").is_file()
    assert manifest["device"] == "local" and manifest["round"] == 1 and len(manifest["tasks"]) == 2
    for t in manifest["tasks"]:
        ids = [c["id"] for c in t["candidates"]]
        assert ids[0] == "default" and len(set(ids)) == len(ids) and 2 <= len(ids) <= 3
        assert {c["origin"] for c in t["candidates"][1:]} == {"sampled"}
        assert all((o / t["dir"] / c["file"]).is_file() for c in t["candidates"])
        assert [c["P"] for c in t["checks"]][0] == t["P"]  # checked at the tuning size first, where it is timed


def test_offline_loop_import_compile_equals_pytorch(measured, bare_python, tmp_path):  # noqa: F811
    d, manifest = measured
    results = json.loads((d / "o1/results.json").read_text())
    assert results["manifest_id"] == manifest["id"] and results["where"]["tvm"]
    rows = [c for t in results["tasks"].values() for c in t["candidates"]]
    assert len(rows) == sum(len(t["candidates"]) for t in manifest["tasks"])
    assert all(c["correct"] and c["median_ms"] > 0 for c in rows), rows  # every candidate computes the reference
    # Which candidate is fastest is this machine's business (and its load's); the import's is to commit what
    # results.json says. So one task's first sampled candidate is made clearly fastest in the measured results,
    # and the others keep their measured timings.
    task = next(t for t in manifest["tasks"] if t["kernel"] == "scatter_add")
    cands = results["tasks"][task["key"]]["candidates"]
    default_ms = next(c["median_ms"] for c in cands if c["id"] == "default")
    next(c for c in cands if c["id"] != "default")["median_ms"] = 0.5 * default_ms
    (d / "o1/results.json").write_text(json.dumps(results))
    expect = expected_imports(manifest, results)
    assert task["name"] in expect
    w = tmp_path / "db"
    res = invoke("tune", "--device", "local", "--import", d / "o1/results.json", "--work-dir", w)
    assert res.exit_code == 0, res.output
    db = json.loads((w / "manifest.json").read_text())
    chosen = {e["name"]: e for e in db["tasks"]}
    assert {n for n, e in chosen.items() if e["chosen"] == "tuned"} == expect
    assert all(e["imported"]["offline"] == manifest["id"] for e in chosen.values())
    res = invoke("compile", d / "model.pt", "--device", "local", "--schedules", w, "-o", tmp_path / "m.so")
    assert res.exit_code == 0, res.output
    tuned = json.loads((tmp_path / "m.json").read_text())["tuned_schedules"]
    kernels = {chosen[n]["kernel"] for n in expect}
    assert tuned["imported"] and tuned["imported"] == tuned["applied"]
    assert {next(k for k in kernels if f.startswith(k)) for f in tuned["imported"]} == kernels
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    for m, out in ((tmp_path / "m.so", "y.npy"), (d / "model.pt", "ref.npy")):
        res = invoke("run", m, "--input", tmp_path / "x.npy", "-o", tmp_path / out)
        assert res.exit_code == 0, res.output
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), np.load(tmp_path / "ref.npy"), rtol=1e-5, atol=1e-5)


def test_second_round_builds_neighbours_of_the_winners(measured, model, tmp_path):
    d, first = measured
    results = json.loads((d / "o1/results.json").read_text())
    m = build_offline(_tasks(model), "local", tmp_path / "o2", max_candidates=4,
                      from_results=d / "o1/results.json", progress=False, echo=lambda s: None)
    assert m["round"] == 2 and m["from"] == first["id"] and m["id"] != first["id"]
    for t in m["tasks"]:
        ms = {c["id"]: c["median_ms"] for c in results["tasks"][t["key"]]["candidates"] if c["id"] != "default"}
        top = sorted(ms, key=ms.get)[:2]
        origins = {c["id"]: c["origin"] for c in t["candidates"]}
        assert origins["default"] == "default" and [i for i, o in origins.items() if o == "winner"] == top
        assert len(origins) <= 4 and set(origins.values()) <= {"default", "winner", "neighbour", "sampled"}
        if t["kernel"] == "patch_conv1x1":  # tiled: its winners have neighbours (new traces)
            assert "neighbour" in origins.values()


def _earlier_database(measured, tmp_path):
    d, _ = measured
    w = tmp_path / "db"
    import_results(d / "o1/results.json", "local", w)
    return w, {n: (w / n).read_bytes() for n in (*DB_FILES, "manifest.json")}


@pytest.mark.parametrize("case", ["device", "build", "truncated", "none_correct", "no_manifest", "kernels"])
def test_bad_results_leave_database_untouched(measured, tmp_path, case):
    d, _ = measured
    w, before = _earlier_database(measured, tmp_path)
    o = tmp_path / "copy"
    shutil.copytree(d / "o1", o, ignore=shutil.ignore_patterns("python", "*.so"))
    path, device = o / "results.json", "local"
    results = json.loads(path.read_text())
    if case == "device":
        device, words = "tx2", "measured for device 'local', not 'tx2'"
    elif case == "build":
        path.write_text(json.dumps({**results, "manifest_id": "0123456789abcdef"}))
        words = "another offline build"
    elif case == "truncated":
        path.write_text(path.read_text()[:200])
        words = "not valid JSON"
    elif case == "none_correct":
        for t in results["tasks"].values():
            for c in t["candidates"]:
                c.update(correct=False, median_ms=None, error="argument 2 differs by 1 at P = 1")
        path.write_text(json.dumps(results))
        words = "no candidate is correct"
    elif case == "no_manifest":
        (o / "offline.json").unlink()
        words = "no offline.json beside it"
    else:
        manifest = json.loads((o / "offline.json").read_text())
        manifest["tasks"][0]["workload"] = "0" * 16
        (o / "offline.json").write_text(json.dumps(manifest))
        words = "another version of the kernels"
    with pytest.raises(LasnetError, match=words.replace("(", r"\(")):
        import_results(path, device, w)
    res = invoke("tune", "--device", device, "--import", path, "--work-dir", w)
    assert res.exit_code != 0 and "Traceback" not in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and words in res.output, res.output
    assert {n: (w / n).read_bytes() for n in before} == before
    assert sorted(p.name for p in w.iterdir()) == sorted([*before, ".lock"])  # no temporary folder left


def test_offline_bad_arguments(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes/a.txt").write_text("mine")
    res = invoke("tune", "--device", "local", "--arch", "las_resnet50", "-g", "4-4-2-1", "--input-size", "64",
                 "--width-mult", "0.25", "--stage", "4", "--offline", tmp_path / "notes")
    assert res.exit_code != 0 and "not an offline tuning folder" in res.output, res.output
    assert (tmp_path / "notes/a.txt").read_text() == "mine"
    res = invoke("tune", "--device", "nosuch", "--import", tmp_path / "results.json")
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1, res.output
