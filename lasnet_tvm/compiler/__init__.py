"""The LAS compiler: ``model.pt`` -> export -> Relax -> LAS kernels -> one compiled module.

Library API (the CLI is a thin layer over it)::

    result = compile_checkpoint("model.pt", "llvm", output="model.so")
    model = CompiledModel.load("model.so")
    logits = model.run(x).logits
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import tvm

from ..block_plan import Fusion
from ..errors import LasnetError
from ..targets import NVCC_MIN_ARCH, arch_number, cuda_root, resolve_target
from .artifact import CompiledModel, save_artifact
from .passes.apply_tuned_schedules import ScheduleDatabase
from .pipeline import CompileResult, compile_model, lasnet_passes

__all__ = ["CompiledModel", "CompileResult", "compile_checkpoint", "compile_model", "lasnet_passes",
           "build_target", "verify_compiled"]


def build_target(spec) -> tvm.target.Target:
    """The target to build with. CUDA kernels are generated as CUDA C for every arch and compiled to a fatbin
    when the library is saved (:mod:`lasnet_tvm.cuda_binary`); archs older than sm_75 need the ``cuda-legacy``
    extra (NVRTC 12, ptxas 12), checked here before anything is compiled. ``nvptx -mcpu=sm_XX`` selects TVM's
    NVPTX backend instead (PTX, kernels without barriers only)."""
    target = resolve_target(spec)
    if target.kind.name == "cuda":
        arch = str(target.attrs.get("arch", "sm_75"))
        if arch_number(arch) < NVCC_MIN_ARCH:
            from ..cuda_binary import require_legacy_toolchain

            require_legacy_toolchain()
    elif target.kind.name == "nvptx":
        root = cuda_root()
        if root is None:
            raise LasnetError("nvptx targets need libdevice: set CUDA_PATH to a CUDA root with nvvm/libdevice")
        os.environ["CUDA_PATH"] = str(root)
    return target


def compile_checkpoint(path, target="llvm", fusion: Fusion | str = Fusion.ALL, static: bool = False, output=None,
                       database: ScheduleDatabase | None = None, params: str = "embed", dump_ir=None,
                       granularity=None, masker="fused") -> CompileResult:
    """Compile a ``model.pt`` for ``target``; with ``output``, also write the library and its manifest (and
    the weights beside them, with ``params="separate"``); with ``dump_ir`` (a folder), the module after each
    pass phase (:func:`.pipeline.apply_passes`).

    ``granularity``: None compiles the checkpoint's own S; a function ``spec -> (S per block, note)`` (e.g. the
    predictor's choice) rebuilds the model at the S it returns (the masker pools to any grid: same weights) and
    records ``note`` in the manifest as ``granularity_choice``.

    ``masker``: the masker placement of every block or one per block (:func:`.pipeline.compile_model`), or a
    function ``spec -> (placement per block, note)`` (e.g. the predictor's choice, at the granularity compiled)
    whose ``note`` goes into the manifest as ``masker_choice``."""
    from ..checkpoint import load_checkpoint

    model, ckpt = load_checkpoint(path)
    note = None
    if granularity is not None:
        per_block, note = granularity(model.spec)
        model = _regranulated(model, ckpt, per_block)
    masker_note = None
    if callable(masker):
        masker, masker_note = masker(model.spec)
    result = compile_model(model, build_target(target), fusion, static, database, source=str(path), params=params,
                           dump_ir=dump_ir, masker=masker)
    if note is not None:
        result.manifest["granularity_choice"] = note
    if masker_note is not None:
        result.manifest["masker_choice"] = masker_note
    if output is not None:
        save_artifact(result.executable, output, result.manifest, result.params)
    return result


def _regranulated(model, ckpt: dict, per_block):
    """``model`` (loaded from ``ckpt``) rebuilt at granularity ``per_block`` with the same weights."""
    from ..models import build_model

    s = model.spec
    if tuple(per_block) == s.granularity:
        return model
    out = build_model(s.arch, list(per_block), s.input_size, s.num_classes, s.width_mult, ckpt.get("se_pool", "active"),
                      depths=s.depths)
    out.load_state_dict(model.state_dict())
    return out.eval()


@dataclass
class VerifyReport:
    """Differences between a ``model.pt`` and its compiled module on the same inputs."""

    samples: int
    max_rel_err: float
    mask_mismatches: list = field(default_factory=list)
    tolerance: float = 1e-4

    @property
    def ok(self) -> bool:
        return self.max_rel_err <= self.tolerance and not self.mask_mismatches

    def summary(self) -> str:
        verdict = "OK" if self.ok else "MISMATCH"
        masks = "masks identical" if not self.mask_mismatches else f"masks differ in {', '.join(self.mask_mismatches[:4])}"
        return (f"{verdict}: {self.samples} inputs, max relative logit error {self.max_rel_err:.2e} "
                f"(tolerance {self.tolerance:.0e}), {masks}")


def verify_compiled(model_path, library, samples: int = 4, seed: int = 0) -> VerifyReport:
    """Run ``model_path`` in PyTorch and ``library`` compiled on the same random inputs and compare."""
    from ..runner import run_pytorch

    compiled = CompiledModel.load(library)
    size = compiled.input_size
    x = np.random.default_rng(seed).standard_normal((samples, 3, size, size)).astype(np.float32)
    ref = run_pytorch(model_path, x)
    got = compiled.run(x)
    if ref.logits.shape != got.logits.shape:
        raise LasnetError(f"{library}: logits {got.logits.shape} do not match {model_path}'s {ref.logits.shape}")
    scale = max(1.0, float(np.abs(ref.logits).max()))
    err = float(np.abs(got.logits - ref.logits).max() / scale)
    bad = [name for name, m in ref.masks.items() if name not in got.masks or not np.array_equal(m, got.masks[name])]
    return VerifyReport(samples, err, bad)
