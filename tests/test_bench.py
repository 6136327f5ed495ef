"""Quick run of ``lasnet-tvm bench block`` on a tiny shape: the JSON fields and the atomic writer."""

from __future__ import annotations

import json

from click.testing import CliRunner

from lasnet_tvm.benchmarks.common import write_json
from lasnet_tvm.cli.bench import bench


def test_bench_block_json(tmp_path):
    out = tmp_path / "b.json"
    res = CliRunner().invoke(bench, ["block", "--channels", "16,8,16", "--size", "9", "--S", "2", "--repeats", "2",
                                     "--rates", "0,0.5,1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    for key in ("device", "shape", "S", "repeats", "static_ms", "torch_static_ms", "rates", "ablation",
                "max_rel_err", "machine", "versions", "git_revision"):
        assert key in data, key
    assert data["shape"] == {"C_in": 16, "C_mid": 8, "C_out": 16, "H": 9, "W": 9, "stride": 1, "groups": 1}
    assert [r["rate"] for r in data["rates"]] == [0.0, 0.5, 1.0]
    assert all(r["fused_ms"] > 0 and r["torch_sparse_ms"] > 0 for r in data["rates"])
    assert set(data["ablation"]) == {"rate", "none", "masker", "masker+gather", "all"}
    assert max(data["max_rel_err"].values()) < 1e-4
    assert "static" in res.output


def test_bench_bad_options():
    r = CliRunner().invoke(bench, ["block", "--channels", "16,8", "--size", "9"])
    assert r.exit_code != 0
    r = CliRunner().invoke(bench, ["block", "--channels", "16,8,16", "--size", "9", "--S", "20"])
    assert r.exit_code != 0


def test_write_json_atomic(tmp_path):
    p = tmp_path / "r.json"
    write_json(p, {"a": 1})
    write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert [f.name for f in tmp_path.iterdir()] == ["r.json"]


def test_bench_model_quick(tmp_path):
    """`bench model` on a tiny network: every field present, compiled outputs checked."""
    import json

    from click.testing import CliRunner

    from lasnet_tvm.cli.main import cli

    out = tmp_path / "model.json"
    res = CliRunner().invoke(cli, ["bench", "model", "--width-mult", "0.125", "--input-size", "64", "--images", "1",
                                   "--repeats", "1", "--rate", "0.5", "--out", str(out)])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    for k in ("machine", "versions", "git_revision", "arch", "granularity", "rate", "ms", "speedup_vs_static",
              "speedup_vs_torch_static", "compile_s", "max_rel_err", "timings"):
        assert k in d
    assert set(d["ms"]) == {"las", "static", "torch_static", "torch_las_dense", "torch_sparse"}
    assert max(d["max_rel_err"].values()) < 1e-4
    assert 0.2 < d["rate"] < 0.8  # the maskers were calibrated to about half of the patches
