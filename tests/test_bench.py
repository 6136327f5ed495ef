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
