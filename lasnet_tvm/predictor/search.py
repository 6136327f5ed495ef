"""Granularity search per stage with the latency model (paper Sec. 4.2, Fig. 6 / Fig. 10).

For each of the first three stages, every candidate S (powers of two and divisors of the stage's output size,
below the size itself: S equal to the size would skip whole blocks, which the paper excludes) is scored by the
predicted dynamic latency of the stage's blocks at the given activation rate. Latency falls with S with
diminishing returns while the mask gets coarser (less flexible, lower accuracy in the paper), so the search
returns the **smallest S whose stage latency is within** ``tolerance`` **of the stage's best** (``tolerance=0``
picks the fastest S). The last stage is fixed at S=1, as in the paper (7x7 features).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from ..archs import ArchSpec, arch_spec, format_granularity
from ..block_plan import Fusion, MaskerPlacement
from ..errors import LasnetError
from .network import NetworkLatency, masker_options, predict_block, predict_block_at, predict_spec
from .profiles import HardwareProfile


def stage_candidates(size: int, include_full: bool = False) -> list[int]:
    """Candidate S of a stage of output size ``size``: powers of two and divisors, not exceeding it."""
    cands = {d for d in range(1, size + 1) if size % d == 0} | {1 << i for i in range(size.bit_length()) if (1 << i) <= size}
    if not include_full and size > 1:
        cands.discard(size)
    return sorted(cands)


@dataclass(frozen=True)
class SearchResult:
    """Chosen granularity, the per-stage scores and the network prediction at that granularity."""

    granularity: str
    per_stage: tuple[int, ...]
    scores: tuple[dict[int, float], ...]  # stage -> {S: predicted stage latency in seconds}
    prediction: NetworkLatency


def search_granularity(arch: str, hw: HardwareProfile, rate: float | Sequence[float] = 0.5, fusion: str = "all",
                       batch: int = 1, input_size: int = 224, tolerance: float = 0.05,
                       fixed_last: bool = True, include_full: bool = False,
                       masker: MaskerPlacement | str = MaskerPlacement.FUSED) -> SearchResult:
    """Choose S per stage for ``arch`` on ``hw`` (:func:`search_spec` of the backbone at ``input_size``).

    Parameters
    ----------
    rate : float or sequence of float
        Activation rate (one, or one per block).
    tolerance : float
        Relative slack: the smallest S with latency <= (1 + tolerance) x the stage's minimum is chosen.
    fixed_last : bool
        Fix the last stage at S=1 (the paper's choice).
    include_full : bool
        Also try S equal to the stage's feature size (whole-block skipping).
    masker : MaskerPlacement, its name, or ``"auto"``
        The placement every block is priced at (``"auto"``: the cheaper one per block).
    """
    return search_spec(arch_spec(arch, 1, input_size), hw, rate, fusion, batch, tolerance, fixed_last, include_full,
                       masker)


def search_spec(base: ArchSpec, hw: HardwareProfile, rate: float | Sequence[float] = 0.5, fusion: str = "all",
                batch: int = 1, tolerance: float = 0.05, fixed_last: bool = True,
                include_full: bool = False, masker: MaskerPlacement | str = MaskerPlacement.FUSED) -> SearchResult:
    """Choose S per stage for the backbone ``base`` (its own granularity is ignored; see
    :func:`search_granularity` for the parameters). ``masker``: the placement every block is priced with, or
    ``"auto"``: each block at its cheaper placement (as ``compile --masker auto`` will then choose)."""
    masker_options(masker, fusion)  # a bad placement fails here, before the search
    if tolerance < 0:
        raise LasnetError(f"tolerance must be >= 0, got {tolerance}")
    depths = base.depths
    n = len(base.blocks)
    rates = [float(rate)] * n if isinstance(rate, (int, float)) else [float(r) for r in rate]
    if len(rates) == 1:
        rates = rates * n
    if len(rates) != n:
        raise LasnetError(f"expected 1 activation rate or {n} (one per block), got {len(rates)}")

    def at(per_stage: Sequence[int]) -> ArchSpec:
        return replace(base, blocks=tuple(replace(b, S=per_stage[b.stage - 1]) for b in base.blocks))

    chosen: list[int] = []
    scores: list[dict[int, float]] = []
    for stage, size in enumerate(base.stage_sizes(), start=1):
        cands = [1] if (fixed_last and stage == 4) else stage_candidates(size, include_full)
        score: dict[int, float] = {}
        for S in cands:
            spec = at([S if s == stage else 1 for s in range(1, 5)])
            score[S] = sum(predict_block_at(b, hw, r, fusion, batch, masker).dynamic_s
                           for b, r in zip(spec.blocks, rates) if b.stage == stage)
        best = min(score.values())
        chosen.append(min(S for S, v in score.items() if v <= best * (1.0 + tolerance)))
        scores.append(score)
    spec = at(chosen)
    pred = predict_spec(spec, hw, rates, fusion, batch, masker)
    return SearchResult(format_granularity(spec.granularity, depths), tuple(chosen), tuple(scores), pred)


def granularity_manifest(result: SearchResult, hw: HardwareProfile, rate: float, tolerance: float,
                         masker: MaskerPlacement | str = MaskerPlacement.FUSED) -> dict:
    """Why ``compile --granularity auto`` chose its S: the predicted stage latency (ms) of every option."""
    return {"method": "predictor", "profile": hw.name, "rate": rate, "tolerance": tolerance, "masker": str(masker),
            "chosen": result.granularity, "per_stage": [
                {"stage": i, "S": S, "predicted_ms": {str(k): round(v * 1e3, 4) for k, v in sc.items()}}
                for i, (S, sc) in enumerate(zip(result.per_stage, result.scores), start=1)],
            "predicted_network_ms": round(result.prediction.dynamic_s * 1e3, 4)}


def auto_granularity(device: str | None, rate: float = 0.5, fusion: str = "all", tolerance: float = 0.05,
                     masker: MaskerPlacement | str = MaskerPlacement.FUSED):
    """The ``granularity`` function of :func:`lasnet_tvm.compiler.compile_checkpoint` for ``compile
    --granularity auto``: ``spec -> (S per block, manifest note)`` from :func:`search_spec` on ``device``'s
    profile (``local``, this machine's, when None), each block priced at the placement ``masker`` (``"auto"``:
    the cheaper one, so that S and placement are chosen together)."""
    from .profiles import get_profile

    hw = get_profile(device or "local")

    def choose(spec: ArchSpec):
        res = search_spec(spec, hw, rate, fusion, tolerance=tolerance, masker=masker)
        return [res.per_stage[b.stage - 1] for b in spec.blocks], granularity_manifest(res, hw, rate, tolerance,
                                                                                       masker)

    return choose


def choose_masker(spec: ArchSpec, hw: HardwareProfile, rate: float = 0.5, fusion: str = "all",
                  batch: int = 1) -> tuple[list[MaskerPlacement], dict]:
    """The masker placement of each block of ``spec`` with the lower predicted dynamic latency at ``rate``
    (:func:`~.network.predict_block`; ties go to ``fused``), and why: the manifest note of ``compile --masker
    auto`` (``masker_choice``: per block the placement chosen and the predicted ms of each option). Only fusion
    ``all`` has the separate placement: other fusion levels get ``fused`` for every block."""
    options = masker_options("auto", fusion)
    chosen, rows = [], []
    for b in spec.blocks:
        ms = {m: predict_block(b, hw, rate, fusion, batch, masker=m).dynamic_s * 1e3 for m in options}
        best = min(options, key=lambda m: ms[m])  # options in order: fused first wins a tie
        chosen.append(best)
        rows.append({"block": b.name, "stage": b.stage, "S": b.S, "stride": b.stride, "chosen": best.value,
                     "predicted_ms": {m.value: round(v, 4) for m, v in ms.items()}})
    note = {"method": "predictor", "profile": hw.name, "rate": rate, "fusion": Fusion.parse(fusion).value,
            "chosen": [m.value for m in chosen], "blocks": rows}
    return chosen, note


def auto_masker(device: str | None, rate: float = 0.5, fusion: str = "all"):
    """The ``masker`` function of :func:`lasnet_tvm.compiler.compile_checkpoint` for ``compile --masker auto``:
    ``spec -> (placement per block, manifest note)`` from :func:`choose_masker` on ``device``'s profile
    (``local``, this machine's, when None)."""
    from .profiles import get_profile

    hw = get_profile(device or "local")
    return lambda spec: choose_masker(spec, hw, rate, fusion)
