"""The compile flow: export -> import -> passes (in order) -> build, and the library API behind ``compile``.

The passes are one list (:func:`lasnet_passes`); :func:`apply_passes` runs them and can write the module after
each of them (``lasnet-tvm compile --dump-ir DIR``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tvm
from tvm import relax

from .. import __version__
from ..block_plan import Fusion, MaskerPlacement
from ..errors import LasnetError
from ..models import LASNet
from ..targets import target_kind
from .export import export_model
from .importer import import_exported
from .params import separate_params
from .passes.apply_tuned_schedules import IMPORTED_ATTR, ApplyTunedSchedules, ScheduleDatabase, tuned_functions
from .passes.lower_las_blocks import LowerLASBlocks
from .passes.schedule_kernels import ScheduleKernels
from .passes.schedule_static_ops import ScheduleStaticOps


# Calling convention of ``main``: (x [1, 3, H, W]) -> (logits, counts [n_blocks], masks [sum of g*g]).
ABI = 1
# params="auto": weights above this size are kept outside the library.
SEPARATE_PARAMS_BYTES = 8 << 20


def lasnet_passes(target: tvm.target.Target, fusion: Fusion | str = Fusion.ALL, static: bool = False,
                  database: ScheduleDatabase | None = None, bounded: bool | None = None,
                  masker=MaskerPlacement.FUSED) -> list:
    """The passes applied to an imported LAS module, in order.

    ``bounded``: patch buffers sized for all patches with the count read on the device (``LowerLASBlocks``);
    default: on CUDA targets, where a host read of the count would stall the device per block. ``masker``: the
    masker placement of every block or of each block (``LowerLASBlocks``).
    """
    if bounded is None:
        bounded = target_kind(target) == "cuda"
    return [
        relax.transform.LegalizeOps(),  # static operators (stem, pooling, fc) -> TensorIR
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),  # fuses the static operators' epilogues
        relax.transform.FuseTIR(),
        # After operator fusion, which reorders bindings by data dependence and would move the
        # match_cast that defines each block's patch count after its uses.
        LowerLASBlocks(fusion=fusion, static=static, bounded=bounded, masker=masker),  # LAS blocks -> TensorIR kernels
        relax.transform.DeadCodeElimination(["main"]),
        relax.transform.LegalizeOps(),  # the reshapes and casts the lowering added
        ApplyTunedSchedules(target, database),  # tuned schedules, where the database has one
        ScheduleKernels(target),  # default schedules of the other LAS kernels
        ScheduleStaticOps(target),  # default schedules of the other static operators
    ]


def phase_file(index: int, name: str) -> str:
    """The dump file of phase ``index``: ``00_import.py``, ``06_lower_las_blocks.py`` (pass names in snake case)."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()
    return f"{index:02d}_{snake}.py"


def apply_passes(mod: tvm.IRModule, passes: list, dump_dir: str | Path | None = None) -> tvm.IRModule:
    """Run ``passes`` on ``mod`` in order. With ``dump_dir``, write the module (TVMScript, ``mod.script()``)
    there as imported (``00_import.py``) and after each pass (``NN_<pass>.py``, numbered in order).

    Raises
    ------
    LasnetError
        ``dump_dir`` cannot be created or written.
    """
    dump = None
    if dump_dir is not None:
        dump = Path(dump_dir)
        try:
            dump.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LasnetError(f"--dump-ir {dump}: cannot create the folder ({e.strerror})") from None

    def write(index: int, name: str) -> None:
        if dump is not None:
            try:
                (dump / phase_file(index, name)).write_text(mod.script())
            except OSError as e:
                raise LasnetError(f"--dump-ir {dump}: cannot write {phase_file(index, name)} ({e.strerror})") from None

    write(0, "import")
    for i, p in enumerate(passes, 1):
        mod = p(mod)
        write(i, p.info.name)
    return mod


def relax_pipeline(target: tvm.target.Target) -> tvm.transform.Pass:
    """The backend's default Relax pipeline without its legalization and fusion (done by :func:`lasnet_passes`)."""
    from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
    from tvm.relax.backend.cuda import pipeline as cuda

    backend = cuda if target.kind.name in ("cuda", "nvptx") else cpu_generic

    @tvm.transform.module_pass(opt_level=0, name="LasnetRelaxPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            return tvm.transform.Sequential(
                backend.library_dispatch_passes(target) + backend.dataflow_lower_passes(target)
                + backend.finalize_passes(target)
            )(mod)

    return _pipeline


def _plain(obj):
    """TVM containers (Map, Array, IntImm, String) -> JSON-able Python values."""
    if hasattr(obj, "items"):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) or type(obj).__name__ == "Array":
        return [_plain(v) for v in obj]
    if isinstance(obj, (bool, int, float)) or obj is None:
        return obj
    if hasattr(obj, "value"):
        return obj.value
    return str(obj)


def masker_placements(masker, n_blocks: int, fusion: Fusion) -> tuple[MaskerPlacement, ...]:
    """The masker placement of each of ``n_blocks`` blocks from one placement (or name) or one per block.

    Raises
    ------
    LasnetError
        An unknown placement, a list of the wrong length, or ``separate`` with a fusion level other than ``all``.
    """
    if isinstance(masker, str):
        masker = [masker] * n_blocks
    out = tuple(MaskerPlacement.parse(m) for m in masker)
    if len(out) != n_blocks:
        raise LasnetError(f"expected 1 masker placement or {n_blocks} (one per block), got {len(out)}")
    if fusion is not Fusion.ALL and MaskerPlacement.SEPARATE in out:
        raise LasnetError(f"masker placement separate needs fusion all, not {fusion.value}")
    return out


@dataclass
class CompileResult:
    """A built Relax executable and its manifest."""

    executable: Any
    manifest: dict
    params: dict | None = None  # the weights by name when they are kept outside the library (``main``'s tail)


def compile_model(model: LASNet, target, fusion: Fusion | str = Fusion.ALL, static: bool = False,
                  database: ScheduleDatabase | None = None, source: str = "", params: str = "embed",
                  dump_ir: str | Path | None = None, masker=MaskerPlacement.FUSED) -> CompileResult:
    """Compile an eval-mode LAS model for ``target``.

    Parameters
    ----------
    model : LASNet
    target : tvm.target.Target
        Resolved target (see :func:`lasnet_tvm.targets.resolve_target`).
    fusion : Fusion or its name
        Fusion level of the dynamic blocks (:class:`lasnet_tvm.block_plan.Fusion`).
    static : bool
        Compile the static counterpart (dense kernels for every block) instead.
    database : ScheduleDatabase, optional
        Tuned schedules (:class:`lasnet_tvm.tuning.TunedSchedules`); the manifest's ``tuned_schedules`` then
        says where they come from and names the functions that got one.
    source : str
        Where the model came from, recorded in the manifest.
    params : {"embed", "separate", "auto"}
        Weights inside the library, or outside it: ``main(x, *weights)`` and ``CompileResult.params``; auto:
        outside when they exceed ``SEPARATE_PARAMS_BYTES``.
    dump_ir : str or Path, optional
        Write the module after import and after each pass into this folder (see :func:`apply_passes`).
    masker : MaskerPlacement, its name, or a sequence of them
        Masker placement of every dynamic block, or one per block in the model's order
        (:class:`lasnet_tvm.block_plan.MaskerPlacement`); ``separate`` needs fusion ``all``. Ignored with
        ``static``. The manifest's ``masker`` lists the placement of each block.
    """
    fusion = Fusion.parse(fusion)
    placements = masker_placements(masker, len(model.spec.blocks), fusion)
    t0 = time.perf_counter()
    mod = import_exported(export_model(model))
    mod = apply_passes(mod, lasnet_passes(target, fusion, static, database, masker=placements), dump_ir)
    applied, imported = tuned_functions(mod), tuned_functions(mod, IMPORTED_ATTR)
    if params == "auto":
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        params = "separate" if size > SEPARATE_PARAMS_BYTES else "embed"
    mod, values = separate_params(mod) if params == "separate" else (mod, None)
    executable = tvm.compile(mod, target=target, relax_pipeline=relax_pipeline(target))
    s = model.spec
    manifest = {
        "format": "lasnet-tvm/compiled",
        "abi": ABI,
        "lasnet_tvm": __version__,
        "tvm": tvm.__version__,
        "source": source,
        "arch": s.arch,
        "granularity": list(s.granularity),
        "input_size": s.input_size,
        "num_classes": s.num_classes,
        "width_mult": s.width_mult,
        "blocks": [b.name for b in s.blocks],
        "grids": [b.grid for b in s.blocks],
        "fusion": fusion.value,
        "static": static,
        "masker": None if static else [m.value for m in placements],
        "target": _plain(target.export()),
        "tuned": database is not None,
        "compile_seconds": round(time.perf_counter() - t0, 2),
    }
    if target.kind.name == "cuda":
        from .kernel_report import launch_report

        manifest["kernel_launch"] = launch_report(mod)
    if database is not None:
        manifest["tuned_schedules"] = {**database.describe(), "applied": applied, "imported": imported}
    if values is not None:
        manifest["params"] = list(values)
    return CompileResult(executable, manifest, values)
