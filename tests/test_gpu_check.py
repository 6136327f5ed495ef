"""The GPU check's dry run (``DRY_RUN=1 benchmarks/gpu/run.sh OUTDIR``): it prepares a reduced upload (a CUDA
library for sm_90 and a runtime-only TVM) and runs everything but the GPU part on the CPU."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(not all(shutil.which(t) for t in ("nvcc", "ptxas", "fatbinary")),
                    reason="CUDA toolkit (nvcc, ptxas, fatbinary) not installed")
def test_gpu_check_dry_run(tmp_path):
    env = dict(os.environ, DRY_RUN="1", REPEATS="2", PYTHON=sys.executable)
    proc = subprocess.run([str(ROOT / "benchmarks/gpu/run.sh"), str(tmp_path)], capture_output=True, text=True,
                          timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[0].startswith("wrote") and "DRY RUN" in proc.stdout  # the table comes last
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert res["dry_run"] and res["prep"]["arch"] == "sm_90"
    assert res["dry_run_checks"]["runtime_imported"]  # the upload's runtime-only TVM imports
    assert res["dry_run_checks"]["upload_bytes"] < 64 << 20
    assert {"torch_fp32", "torch_tf32"} <= set(res["model_ms"])
    assert len(res["blocks"]) == 8 and all(b["torch_fp32_ms"] > 0 for b in res["blocks"])
    pred = res["prep"]["prediction"]
    assert set(pred["las_ms"]) == {"0.0", "0.25", "0.5", "0.75", "1.0"} and pred["static_ms"] > 0
    upload = tmp_path / "upload"
    assert (upload / "model.so").is_file() and not list(upload.rglob("*tvm_compiler*"))
