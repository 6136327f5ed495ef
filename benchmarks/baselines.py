"""Static baselines in other runtimes for ``bench model --baseline``: the static PyTorch model exported to ONNX
(torch's exporter) and run batch 1 by ONNX Runtime or OpenVINO on the CPU, with as many threads as TVM.

They are benchmark extras (``pip install 'lasnet-tvm[bench]'``), not dependencies of the package.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import LasnetError

#: runtime -> the modules it needs (the ONNX export needs onnx and onnxscript)
NEEDS = {"onnxruntime": ("onnxruntime", "onnx", "onnxscript"), "openvino": ("openvino", "onnx", "onnxscript")}
BASELINES = tuple(NEEDS)
_PIP = {"onnxruntime": "onnxruntime", "onnx": "onnx", "onnxscript": "onnxscript", "openvino": "openvino"}


@dataclass
class Baseline:
    """A static model ready to run in another runtime: ``run(x [1, 3, H, W] float32) -> logits [1, classes]``."""

    name: str
    run: Callable[[np.ndarray], np.ndarray]
    info: dict = field(default_factory=dict)


def check_available(names) -> tuple[str, ...]:
    """Validate ``--baseline`` names before any long work starts; returns them.

    Raises
    ------
    LasnetError
        An unknown runtime, or one whose Python packages are not installed (saying what to pip install).
    """
    for name in names:
        if name not in NEEDS:
            raise LasnetError(f"--baseline {name!r}: expected one of {', '.join(BASELINES)}")
        missing = [m for m in NEEDS[name] if importlib.util.find_spec(m) is None]
        if missing:
            raise LasnetError(f"--baseline {name} needs {', '.join(missing)}: pip install 'lasnet-tvm[bench]' "
                              f"(or pip install {' '.join(_PIP[m] for m in missing)})")
    return tuple(names)


def export_onnx(model: torch.nn.Module, input_size: int, path: str | Path) -> float:
    """Export ``model`` (eval mode, input ``[1, 3, input_size, input_size]``) to ONNX at ``path``; returns seconds.

    torch's exporter (``dynamo=True``) without its own graph optimisation: the runtimes optimise the graph
    themselves (BN folding, conv + add + ReLU fusion).
    """
    t0 = time.perf_counter()
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "torchvision is not installed" and similar notes
    try:  # the exporter prints its progress to stdout
        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecations inside torch.export
            program = torch.onnx.export(model.eval(), (torch.zeros(1, 3, input_size, input_size),), dynamo=True,
                                        optimize=False)
        program.save(str(path))
    finally:
        quiet.setLevel(level)
    return time.perf_counter() - t0


def onnxruntime_baseline(onnx_path: str | Path, threads: int) -> Baseline:
    """ONNX Runtime's CPU provider: ``threads`` intra-op threads, sequential execution, every graph optimisation."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return Baseline("onnxruntime", lambda x: sess.run(None, {name: x})[0],
                    {"version": ort.__version__, "threads": threads, "provider": "CPUExecutionProvider",
                     "graph_optimization": "ORT_ENABLE_ALL"})


def openvino_baseline(onnx_path: str | Path, threads: int) -> Baseline:
    """OpenVINO on the CPU: ``threads`` inference threads, latency hint, float32 (by default OpenVINO computes in
    bf16 where the CPU has it)."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(onnx_path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                               "PERFORMANCE_HINT": "LATENCY",
                                                               "INFERENCE_PRECISION_HINT": "f32"})
    request, out = compiled.create_infer_request(), compiled.output(0)
    return Baseline("openvino", lambda x: np.array(request.infer({0: x})[out]),
                    {"version": importlib.metadata.version("openvino"), "threads": threads, "device": "CPU",
                     "hint": "LATENCY", "precision": "f32"})


_MAKERS = {"onnxruntime": onnxruntime_baseline, "openvino": openvino_baseline}


def build(names, static_model: torch.nn.Module, input_size: int, threads: int, workdir: str | Path) -> dict:
    """Export ``static_model`` once (into ``workdir``) and load it in every runtime of ``names``."""
    if not names:
        return {}
    path = Path(workdir) / "static.onnx"
    export_s = export_onnx(static_model, input_size, path)
    out = {}
    for name in names:
        b = _MAKERS[name](path, threads)
        b.info.update(export="torch.onnx.export(dynamo=True, optimize=False)", export_s=export_s,
                      onnx=importlib.metadata.version("onnx"), onnxscript=importlib.metadata.version("onnxscript"))
        out[name] = b
    return out
