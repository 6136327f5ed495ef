"""``lasnet-tvm bench block``: one LAS block, static vs dynamic, TVM vs PyTorch, and the fusion ablation.

Measured side by side in one process, round-robin: our static block (TVM, same style of schedules), the
PyTorch eager static block (BN folded, SE included), the sparse PyTorch execution (:func:`sparse_block`), the fused
dynamic block at each rate, and the paper's Table 1 ablation (fusion none / masker / masker+gather / all).

Masks at a target rate: ``round(r * g * g)`` random patches are chosen; the masker weights are set to
``wm = e_0, bm = 0`` and channel 0 of the input is +1 on the chosen patches' input area, -1 elsewhere, so
each variant's own masker kernel selects exactly those patches (no variant is fed a mask). The PyTorch
sparse execution is given the same mask. Every variant, PyTorch's included, is checked against the dense
masked PyTorch reference (:func:`dense_masked_block`) on the same input before timing; times are medians over
full block calls including the Python glue.
"""

from __future__ import annotations

import torch

from ..archs import BlockSpec, arch_spec, conv_out
from ..block_plan import Fusion, MaskerPlacement
from ..block_runtime import CompiledBlock
from ..errors import LasnetError
from ..models.folded import dense_masked_block, sparse_block, static_block
from ..models.synthetic import input_at_rate, random_folded_block
from ..records import cpu_model, provenance
from ..timing import summarize, time_interleaved

TOLERANCE = 1e-4  # max |out - ref| / max(1, max |ref|) accepted for float32


def block_spec(arch: str | None, stage: int, channels: tuple[int, int, int] | None, size: int | None,
               stride: int, S: int) -> BlockSpec:
    """The benchmarked block: explicit channels/size/stride, or the first identity block of ``arch``'s stage."""
    if channels is not None:
        if size is None:
            raise LasnetError("--channels needs --size")
        c_in, c_mid, c_out = channels
        out = conv_out(size, stride)
        spec = BlockSpec("bench", stage, 0, c_in, c_mid, c_out, stride, 1, 0, size, out, S,
                         downsample=(c_in != c_out or stride != 1))
    else:
        blocks = [b for b in arch_spec(arch or "las_resnet50").blocks if b.stage == stage]
        if not blocks:
            raise LasnetError(f"stage {stage} does not exist (1..4)")
        plain = [b for b in blocks if not b.downsample]
        b = (plain or blocks)[0]
        from dataclasses import replace

        spec = replace(b, S=S)
    if S < 1 or S > spec.out_size:
        raise LasnetError(f"S={S} must be in 1..{spec.out_size} (the block's output size)")
    return spec


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``max |out - ref| / max(1, max |ref|)``."""
    return float((out - ref).abs().max()) / max(1.0, float(ref.abs().max()))


def check_errors(errs: dict[str, float], what: str = "bench block") -> None:
    """Raise when a variant's relative error (``errs``: variant -> :func:`rel_err`) exceeds :data:`TOLERANCE`.

    Raises
    ------
    LasnetError
        Naming every failing variant and its error.
    """
    bad = {k: v for k, v in errs.items() if not v <= TOLERANCE}  # NaN fails too
    if bad:
        raise LasnetError(f"{what}: " + "; ".join(f"{k} differs from the PyTorch reference (max rel err {v:.2e} > "
                                                  f"{TOLERANCE})" for k, v in bad.items()))


def run(spec: BlockSpec, rates=(0.25, 0.5, 0.75, 1.0), repeats: int = 50, ablation_rate: float = 0.6,
        target: str = "llvm", threads: int = 2, seed: int = 0, log=print, maskers=("fused",)) -> dict:
    """Build, check and time every variant; returns the JSON-ready result dict.

    ``maskers``: the masker placements (:class:`~lasnet_tvm.block_plan.MaskerPlacement`) of the fully fused
    block timed at each rate (the fused one always; each rate's entry gets ``<placement>_ms``).

    Every timed variant (compiled static and dynamic, PyTorch static and sparse) is first checked against
    :func:`~lasnet_tvm.models.folded.dense_masked_block` on its input (all patches active for the static ones).

    Raises
    ------
    LasnetError
        A masker selected other patches than intended, or a variant's output differs from the reference by more
        than :data:`TOLERANCE` (the message names the variant and its error).
    """
    torch.set_num_threads(threads)
    fb = random_folded_block(spec, seed)
    log(f"compiling block {spec.c_in}->{spec.c_mid}->{spec.c_out} {spec.in_size}x{spec.in_size} "
        f"stride {spec.stride} S={spec.S} for {target} ...")
    static = CompiledBlock.build(fb, target, static=True)
    dyn = {f: CompiledBlock.build(fb, target, fusion=f) for f in Fusion.values()}
    others = [m.value for m in map(MaskerPlacement.parse, maskers) if m is not MaskerPlacement.FUSED]
    dyn.update({m: CompiledBlock.build(fb, target, masker=m) for m in others})
    errs: dict[str, float] = {}
    fns: dict[str, object] = {}

    x0, _ = input_at_rate(spec, 1.0, seed)
    x0b = x0[None].contiguous()
    with torch.no_grad():
        ref0 = dense_masked_block(fb, x0b, torch.ones(1, spec.grid, spec.grid, dtype=torch.bool))[0]
        errs["static"] = rel_err(static(x0)[0], ref0)
        errs["torch_static"] = rel_err(static_block(fb, x0b)[0], ref0)
    fns["static"] = lambda: static(x0)
    fns["torch_static"] = lambda: static_block(fb, x0b)

    cases = ([(r, "all") for r in rates] + [(r, m) for r in rates for m in others]
             + [(ablation_rate, f) for f in Fusion.values()])
    for r, fusion in cases:
        x, want = input_at_rate(spec, r, seed + 1)
        xb = x[None].contiguous()
        with torch.no_grad():
            ref = dense_masked_block(fb, xb, want[None])[0]
        out, mask = dyn[fusion](x)
        if not torch.equal(mask, want):
            raise LasnetError(f"fused={fusion} r={r}: the masker kernel selected {int(mask.sum())} patches, "
                              f"expected {int(want.sum())}")
        key = f"{fusion}@{r}"
        errs[key] = rel_err(out, ref)
        fns[key] = (lambda b=dyn[fusion], x=x: b(x))
        if fusion == "all":
            with torch.no_grad():
                errs[f"torch_sparse@{r}"] = rel_err(sparse_block(fb, xb, want[None])[0][0], ref)
            fns[f"torch_sparse@{r}"] = (lambda x=xb, m=want[None]: sparse_block(fb, x, m))
    worst = max(errs.values())
    check_errors(errs)
    log(f"all {len(errs)} variants match the reference (max rel err {worst:.2e}); timing {repeats} rounds ...")
    with torch.no_grad():
        t = time_interleaved(fns, repeats)
    med = {k: v["median_ms"] for k, v in t.items()}
    return {
        "device": f"{target} ({cpu_model()}, {threads} threads)",
        "target": str(static.target),
        "shape": {"C_in": spec.c_in, "C_mid": spec.c_mid, "C_out": spec.c_out, "H": spec.in_size,
                  "W": spec.in_size, "stride": spec.stride, "groups": spec.groups},
        "S": spec.S,
        "repeats": repeats,
        "threads": threads,
        "static_ms": med["static"],
        "torch_static_ms": med["torch_static"],
        "rates": [{"rate": r, "fused_ms": med[f"all@{r}"], "torch_sparse_ms": med[f"torch_sparse@{r}"],
                   "fused_vs_static": med[f"all@{r}"] / med["static"], **{f"{m}_ms": med[f"{m}@{r}"] for m in others}}
                  for r in rates],
        "ablation": {"rate": ablation_rate, **{f: med[f"{f}@{ablation_rate}"] for f in Fusion.values()}},
        "max_rel_err": errs,
        "timings": t,
        "mask_method": "masker weights wm=e_0, bm=0; input channel 0 = +1 on chosen patches, -1 elsewhere",
        **provenance(),
    }


def format_table(res: dict) -> str:
    """Plain-text table of a :func:`run` result."""
    sh = res["shape"]
    lines = [f"block {sh['C_in']}->{sh['C_mid']}->{sh['C_out']} {sh['H']}x{sh['W']} stride {sh['stride']} "
             f"S={res['S']} on {res['device']} ({res['repeats']} rounds, median ms)",
             f"  static (TVM)           {res['static_ms']:8.3f}",
             f"  static (PyTorch eager) {res['torch_static_ms']:8.3f}",
             "  rate   fused(TVM)  vs static  sparse(PyTorch)"
             + ("  separate masker" if "separate_ms" in res["rates"][0] else "")]
    for r in res["rates"]:
        sep = f"  {r['separate_ms']:15.3f}" if "separate_ms" in r else ""
        lines.append(f"  {r['rate']:<5.2f}  {r['fused_ms']:9.3f}  {r['fused_vs_static']:9.2f}  {r['torch_sparse_ms']:12.3f}"
                     + sep)
    ab = res["ablation"]
    lines.append(f"  ablation at r={ab['rate']}: " + ", ".join(f"{f} {ab[f]:.3f}" for f in Fusion.values())
                 + f"  (fusion speedup {ab['none'] / ab['all']:.2f}x)")
    lines.append(f"  max rel err {max(res['max_rel_err'].values()):.2e}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# Helpers shared by ``bench fusion``, ``bench rate`` and ``bench granularity``.


def select_blocks(arch: str, stages=None, block: str | None = None, input_size: int = 224,
                  width_mult: float = 1.0) -> list[BlockSpec]:
    """The measured blocks: the block named ``block``, else the first identity block of each stage in ``stages``.

    Raises
    ------
    LasnetError
        Unknown arch, stage or block name.
    """
    blocks = arch_spec(arch, 1, input_size, width_mult=width_mult).blocks
    if block is not None:
        named = [b for b in blocks if b.name == block]
        if not named:
            raise LasnetError(f"{arch} has no block {block!r} (names like {blocks[0].name}, {blocks[-1].name})")
        return named
    out = []
    for stage in stages or (1, 2, 3, 4):
        in_stage = [b for b in blocks if b.stage == stage]
        if not in_stage:
            raise LasnetError(f"stage {stage} does not exist (1..4)")
        out.append(([b for b in in_stage if not b.downsample] or in_stage)[0])
    return out


_COMPILED: dict = {}


def compiled_block(spec: BlockSpec, target, fusion: str | None = None, seed: int = 0) -> CompiledBlock:
    """:class:`CompiledBlock` of :func:`random_folded_block` ``(spec, seed)``; ``fusion=None`` is the static block.

    Blocks are cached per process (a few dozen at most), so benchmarks run one after another share compilations.
    """
    key = (spec, str(target), fusion, seed)
    if key not in _COMPILED:
        if len(_COMPILED) >= 32:
            _COMPILED.pop(next(iter(_COMPILED)))
        fb = random_folded_block(spec, seed)
        _COMPILED[key] = (CompiledBlock.build(fb, target, static=True) if fusion is None
                          else CompiledBlock.build(fb, target, fusion=fusion))
    return _COMPILED[key]


def sync_of(blk: CompiledBlock):
    """A function that waits for the block's device (a no-op on CPU)."""
    if blk.device.type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def checked_static(blk: CompiledBlock, seed: int = 0) -> tuple[torch.Tensor, float]:
    """Input (all patches active, on the block's device) and relative error of the static block vs PyTorch.

    Raises
    ------
    LasnetError
        The output differs from :func:`dense_masked_block` (all-ones mask) by more than :data:`TOLERANCE`.
    """
    s, fb = blk.fb.spec, blk.fb
    x, _ = input_at_rate(s, 1.0, seed)
    with torch.no_grad():
        ref = dense_masked_block(fb, x[None], torch.ones(1, s.grid, s.grid, dtype=torch.bool))[0]
    xd = x.to(blk.device)
    out, _ = blk(xd)
    err = rel_err(out.cpu(), ref)
    check_errors({f"static block {s.name}": err}, "bench")
    return xd, err


def checked_dynamic(blk: CompiledBlock, rate: float, seed: int = 0) -> tuple[torch.Tensor, int, float]:
    """Input at ``rate`` (on the block's device), active patches and relative error of the block vs PyTorch.

    Raises
    ------
    LasnetError
        The block's masker picked other patches than intended, or its output differs from
        :func:`dense_masked_block` by more than :data:`TOLERANCE`.
    """
    s, fb = blk.fb.spec, blk.fb
    x, want = input_at_rate(s, rate, seed)
    with torch.no_grad():
        ref = dense_masked_block(fb, x[None], want[None])
    xd = x.to(blk.device)
    out, mask = blk(xd)
    what = f"block {s.name} fusion={blk.fusion} S={s.S} r={rate}"
    if not torch.equal(mask.cpu(), want):
        raise LasnetError(f"{what}: the masker selected {int(mask.sum())} patches, expected {int(want.sum())}")
    err = rel_err(out.cpu(), ref[0])
    check_errors({what: err}, "bench")
    return xd, int(want.sum()), err


def kernel_rows(blk: CompiledBlock, x: torch.Tensor, repeat: int, min_repeat_ms: float) -> list[dict]:
    """Per-kernel medians of :meth:`CompiledBlock.time_steps`.

    Rows: ``kernel``, ``params``, ``P`` (active patches of the call; 0 for the static block), ``measured_ms``
    (median) and ``spread`` (:func:`~lasnet_tvm.timing.summarize` of the samples).
    """
    rows = blk.time_steps(x, repeat=repeat, min_repeat_ms=min_repeat_ms)
    P = 0 if blk.static else blk.active_count()
    return [{"kernel": r["kernel"], "params": r["params"], "P": P, "measured_ms": r["median_ms"],
             "spread": summarize([t * 1e-3 for t in r["samples_ms"]])} for r in rows]


def shape_of(spec: BlockSpec) -> dict:
    """JSON description of a block's shape."""
    return {"block": spec.name, "stage": spec.stage, "C_in": spec.c_in, "C_mid": spec.c_mid, "C_out": spec.c_out,
            "H": spec.in_size, "H_out": spec.out_size, "stride": spec.stride, "groups": spec.groups,
            "se_channels": spec.se_channels, "downsample": spec.downsample}
