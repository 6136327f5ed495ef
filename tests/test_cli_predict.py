"""CLI: predict (table, JSON, search), devices, errors, profile-device."""

import json
import time

import pytest
from click.testing import CliRunner

from lasnet_tvm.cli.main import cli
from lasnet_tvm.predictor.profiles import load_profile


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_predict_json_fields():
    r = run("predict", "--device", "v100", "--arch", "las_resnet101", "--granularity", "4-4-2-1", "--rate", "0.5",
            "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    for k in ("device", "arch", "granularity", "rate", "static_ms", "dynamic_ms", "ratio", "blocks"):
        assert k in d
    assert d["granularity"] == "4-4-2-1" and len(d["blocks"]) == 33
    b = d["blocks"][0]
    for k in ("name", "stage", "S", "static_ms", "dynamic_ms", "ratio", "ops"):
        assert k in b
    assert sum(b["ops"].values()) == pytest.approx(b["dynamic_ms"], rel=1e-3)
    total = d["stem_ms"] + d["head_ms"] + sum(x["dynamic_ms"] for x in d["blocks"])
    assert total == pytest.approx(d["dynamic_ms"], rel=1e-3)


def test_predict_table_and_options():
    r = run("predict", "--device", "tx2", "--arch", "las_regnety_400mf", "-g", "4-4-2-1", "--rate", "0.4",
            "--fusion", "none", "--batch", "2")
    assert r.exit_code == 0, r.output
    assert "trunk_output.block1.block1-0" in r.output and "total: static" in r.output


def test_predict_search_json():
    r = run("predict", "--device", "tx2", "--arch", "las_resnet101", "--rate", "0.5", "--search-granularity",
            "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    S = [int(v) for v in d["granularity"].split("-")]
    assert len(S) == 4 and S[3] == 1 and d["search"]["per_stage"] == S
    r = run("predict", "--device", "tx2", "--rate", "0.5", "--search-granularity")
    assert "stage 1: chosen S=" in r.output


def test_devices():
    r = run("devices", "--json")
    assert r.exit_code == 0
    names = {d["name"]: d for d in json.loads(r.output)}
    assert names["gtx1080"]["lanes"] == 128 and names["tx2"]["target"] == "nvidia/jetson-tx2"
    assert "v100" in run("devices").output


@pytest.mark.parametrize("args, needle", [
    (("predict", "--device", "k80"), "unknown device 'k80'"),
    (("predict", "-g", "1-2"), "granularity '1-2'"),
    (("predict", "-g", "64-1-1-1"), "exceeds its feature size"),
    (("predict", "--rate", "1.5"), "activation rate"),
    (("predict", "--rate", "abc"), "rate 'abc'"),
    (("predict", "--arch", "resnet9"), "resnet9"),
])
def test_errors(args, needle):
    r = run(*args)
    assert r.exit_code != 0 and needle in r.output and "Traceback" not in r.output


def test_bad_profile_file(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("kind: gpu\ntarget: cuda\npes: 0\nlanes: 64\nclock_mhz: 1000\ndram_gbps: 100\nl2_kb: 1\nlocal_kb: 1\n")
    r = run("predict", "--profile", str(f))
    assert r.exit_code != 0 and "mine.yaml" in r.output and "'pes'" in r.output


def test_profile_device(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "local.yaml"
    t = time.time()
    r = run("profile-device", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert time.time() - t < 60
    p = load_profile(out)
    assert p.kind == "cpu" and p.pes >= 1 and p.dram_gbps > 0 and 0 < p.efficiency.compute <= 1
    r = run("predict", "--profile", str(out), "--arch", "las_resnet50", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["static_ms"] > 0
