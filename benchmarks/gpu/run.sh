#!/usr/bin/env bash
# The GPU check (see benchmarks/gpu/gpu_check.py).
#   benchmarks/gpu/run.sh prepare [UPLOAD]    here, with lasnet-tvm installed: build the upload (<= 64 MiB, default gpu_upload/)
#   benchmarks/gpu/run.sh OUTDIR              on the GPU machine (Python, numpy, torch): run it, write OUTDIR/gpu_check.json
#   DRY_RUN=1 benchmarks/gpu/run.sh OUTDIR    on a CPU: prepare a reduced upload in OUTDIR/upload, then everything
#                                             but the GPU part (TARGET_PYTHON: the upload's Python, default this one)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PY="${PYTHON:-python3}"
UPLOAD="${UPLOAD:-$(cd "$HERE/../.." && pwd)/gpu_upload}"  # ignored by git; carried to the GPU machine
if [ "${1:-}" = prepare ]; then
    exec "$PY" "$HERE/prepare.py" "${2:-$UPLOAD}" --arch "${ARCH:-sm_90}" --python "${TARGET_PYTHON:-3.12}"
fi
OUT="${1:?usage: benchmarks/gpu/run.sh OUTDIR | prepare [UPLOAD]}"
mkdir -p "$OUT"
if [ "${DRY_RUN:-0}" = 1 ]; then
    LOCAL="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    "$PY" "$HERE/prepare.py" "$OUT/upload" --reduced --arch "${ARCH:-sm_90}" --python "${TARGET_PYTHON:-$LOCAL}"
    exec "$PY" "$HERE/gpu_check.py" "$OUT/upload" "$OUT" --dry-run --repeats "${REPEATS:-3}"
fi
# TVM's CUDA runtime needs libcudart: take it from torch's nvidia wheels
NVLIBS="$("$PY" -c 'import glob, os, nvidia; print(":".join(sorted(glob.glob(os.path.join(list(nvidia.__path__)[0], "*", "lib")))))' 2>/dev/null || true)"
export LD_LIBRARY_PATH="${NVLIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$PY" "$HERE/gpu_check.py" "$UPLOAD" "$OUT" --repeats "${REPEATS:-50}"
