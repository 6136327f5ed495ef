"""A static report of a compiled CUDA library (``lasnet-tvm inspect``): what device code it ships and, per kernel,
the launch geometry as a function of the patch count P, registers, shared memory, spills and outputs per thread.

Needs no GPU and no compiler: the device code is read from the library's module table
(:func:`lasnet_tvm.cuda_binary.read_device_modules`), the ptxas report and the launch geometry from the manifest
written beside it when it was compiled.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import LasnetError

#: Kernel names of convolutions (the LAS kernels and the static operators TVM fuses with a conv2d).
CONV_MARKERS = ("conv",)


def is_conv_kernel(name: str, launch: dict) -> bool:
    """The convolution kernel of a convolution function: its first kernel (``<func>_kernel``; the later ones of
    masker_conv1x1 are the mask's reduction and compaction), when it accumulates."""
    return any(m in name for m in CONV_MARKERS) and name.endswith("_kernel") and launch.get("reduction", True)


def inspect_library(path) -> dict:
    """``{"library", "target", "binary", "arch", "kernels": [...]}`` of a compiled CUDA library.

    ``binary`` is ``"cubin"`` (machine code, in a fatbin with its PTX), ``"ptx"`` or ``"source"`` (CUDA C,
    compiled when loaded). Each kernel: ``name``, ``conv``, ``grid``, ``block`` (expressions of P),
    ``registers``, ``shared_bytes``, ``spills`` (bytes), ``outputs_per_thread``.

    Raises
    ------
    LasnetError
        A missing or corrupt library or manifest, or a library compiled for the CPU.
    """
    from ..cuda_binary import binary_kind, read_device_modules
    from .artifact import read_manifest

    path = Path(path)
    manifest = read_manifest(path)
    kind = manifest["target"].get("kind")
    if kind not in ("cuda", "nvptx"):
        raise LasnetError(f"{path}: compiled for {kind}, not CUDA; inspect reports CUDA libraries")
    images = read_device_modules(path)
    if not images:
        raise LasnetError(f"{path}: holds no CUDA module")
    kinds = sorted({binary_kind(m) for m in images})
    resources = manifest.get("device_code", {}).get("kernels", {})
    launch = manifest.get("kernel_launch", {})
    kernels = []
    for image in images:
        for name, tags in image.kernels.items():
            res, geo = resources.get(name, {}), launch.get(name, {})
            kernels.append({
                "name": name, "conv": is_conv_kernel(name, geo),
                "grid": geo.get("grid"), "block": geo.get("block"), "launch_tags": list(tags),
                "registers": res.get("registers"), "shared_bytes": res.get("shared_bytes"),
                "spills": res.get("spills"), "stack_bytes": res.get("stack_bytes"),
                "outputs_per_thread": geo.get("outputs_per_thread"),
            })
    kernels.sort(key=lambda k: k["name"])
    return {"library": str(path), "target": manifest["target"], "arch": manifest["target"].get(
        "arch", manifest["target"].get("mcpu")), "binary": kinds[0] if len(kinds) == 1 else "+".join(kinds),
        "kernels": kernels}


def format_report(report: dict) -> str:
    """The report as a table, one kernel a line."""
    def cell(v):
        return "-" if v is None else str(v)

    head = f"{report['library']}: {report['arch']}, device code: {report['binary']}, {len(report['kernels'])} kernels"
    rows = [("kernel", "conv", "grid", "block", "regs", "shared B", "spill B", "out/thr")]
    for k in report["kernels"]:
        grid = " x ".join(d for d in (k["grid"] or []) if d != "1") or ("1" if k["grid"] else "-")
        block = " x ".join(d for d in (k["block"] or []) if d != "1") or ("1" if k["block"] else "-")
        rows.append((k["name"], "yes" if k["conv"] else "", grid, block, cell(k["registers"]),
                     cell(k["shared_bytes"]), cell(k["spills"]), cell(k["outputs_per_thread"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join([head, *lines])
