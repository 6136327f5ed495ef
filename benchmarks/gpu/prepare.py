"""Prepare the GPU check's upload (here, with TVM): one folder that a GPU machine with only Python, numpy and
torch runs with ``benchmarks/gpu/run.sh``.

    python benchmarks/gpu/prepare.py UPLOAD_DIR [--arch sm_90] [--python 3.12] [--reduced]

The folder is a runtime-only bundle (:func:`lasnet_tvm.deploy.build_bundle`, no weights: the GPU draws random ones
of the same shapes and statistics) of LAS-ResNet-50 compiled for ``--arch``, with the static counterpart's
library in ``static/`` and ``prep.json``: what was built, the predictor's latencies on the GPU's hardware
profile (LAS at a grid of activation rates, static), and the block specs of the torch baselines.
``--reduced`` builds a small model (one block per stage, width 0.25, 64 x 64 inputs, LAS library only) for the
CPU dry run.
The upload must fit ``LIMIT_BYTES``; a larger one is refused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

LIMIT_BYTES = 64 << 20
RATES = (0.0, 0.25, 0.5, 0.75, 1.0)
#: The block benchmarks: (arch, stage) of the first block of each stage.
BLOCKS = [("las_resnet50", s) for s in (1, 2, 3, 4)] + [("las_regnety_800mf", s) for s in (1, 2, 3, 4)]


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def predictions(arch: str, granularity: str, size: int, profile: str) -> dict:
    """The predictor's LAS (per rate) and static latencies in ms on ``profile`` (of the full-depth backbone)."""
    from lasnet_tvm.predictor.network import predict_network
    from lasnet_tvm.predictor.profiles import load_profile
    from lasnet_tvm.resources import hw_profiles_dir

    hw = load_profile(hw_profiles_dir() / f"{profile}.yaml")
    out = {"profile": profile, "las_ms": {}, "static_ms": None}
    for r in RATES:
        net = predict_network(arch, hw, granularity, r, "all", 1, size)
        out["las_ms"][str(r)] = net.dynamic_s * 1e3
        out["static_ms"] = net.static_s * 1e3
    return out


def prepare(upload: Path, arch: str, python: str, reduced: bool, profile: str) -> dict:
    from lasnet_tvm.checkpoint import save_checkpoint
    from lasnet_tvm.compiler import compile_checkpoint
    from lasnet_tvm.deploy import build_bundle
    from lasnet_tvm.models import build_model

    model_arch, granularity = "las_resnet50", "4-4-2-1"
    size, classes, width, depths = (64, 10, 0.25, "1-1-1-1") if reduced else (224, 1000, 1.0, None)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        pt = save_checkpoint(Path(d) / "model.pt", build_model(model_arch, granularity, size, classes, width,
                                                                     depths=depths))
        target = f"cuda -arch={arch}"
        bundle = build_bundle(pt, upload, target=target, python=python, no_weights=True)
        if not reduced:
            static = upload / "static"
            static.mkdir()
            compile_checkpoint(pt, target, static=True, output=static / "model.so", params="separate")
            params = static / "model.params.npz"
            import numpy as np

            with np.load(params) as f:
                stats = {k: {"shape": list(f[k].shape), "dtype": str(f[k].dtype), "mean": float(f[k].mean()),
                             "std": float(f[k].std())} for k in f.files}
            params.unlink()
            (static / "random_weights.json").write_text(json.dumps({"seed": 0, "params": stats}) + "\n")
    info = {"arch": arch, "python": python, "reduced": reduced, "model": {
        "arch": model_arch, "granularity": granularity, "input_size": size, "num_classes": classes, "width": width,
        "depths": depths},
        "libraries": {"las": "model.so", **({} if reduced else {"static": "static/model.so"})},
        "blocks": [{"arch": a, "stage": s} for a, s in BLOCKS], "rates": list(RATES),
        "prediction": predictions(model_arch, granularity, size, profile),
        "prepare_seconds": round(time.time() - t0, 1), "bundle": bundle.info}
    (upload / "prep.json").write_text(json.dumps(info, indent=2) + "\n")
    size_bytes = folder_bytes(upload)
    info["bytes"] = size_bytes
    if size_bytes > LIMIT_BYTES:
        raise SystemExit(f"error: the upload {upload} is {size_bytes / 2**20:.1f} MiB, over the "
                         f"{LIMIT_BYTES >> 20} MiB limit")
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("upload", type=Path, help="folder to write (replaced when it is an earlier upload)")
    p.add_argument("--arch", default="sm_90")
    p.add_argument("--python", default="3.12", help="the GPU machine's Python (X.Y)")
    p.add_argument("--profile", default="h100", help="hardware profile of the predictions (hw_profiles/NAME.yaml)")
    p.add_argument("--reduced", action="store_true", help="a small model, LAS library only (CPU dry run)")
    args = p.parse_args(argv)
    from lasnet_tvm.errors import LasnetError

    if args.upload.exists() and (args.upload / "prep.json").is_file():
        shutil.rmtree(args.upload)
    try:
        info = prepare(args.upload, args.arch, args.python, args.reduced, args.profile)
    except LasnetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.upload}: {info['bytes'] / 2**20:.1f} MiB ({args.arch}, Python {args.python}"
          f"{', reduced' if args.reduced else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
