"""Calibrate a hardware profile against kernel measurements (``lasnet-tvm calibrate``).

1. **Cases**: LAS blocks of a mix of backbones (default LAS-ResNet-50 and LAS-RegNetY-400MF: dense and
   grouped 3x3 convs, SE; an identity block per stage at one or two S, and the first block of each stage),
   random weights. Every block is compiled static and dynamic (fusion ``all`` at activation rates 0 (no
   active patch), 0.25 and 0.75, ``none`` at 0.5) and each kernel is timed alone with
   :meth:`~lasnet_tvm.block_runtime.CompiledBlock.time_steps`, in rounds interleaved over all blocks; a point
   is one distinct kernel call ``(kernel, shape, P)`` with the **median** of all its samples and the median of
   each round (:attr:`Point.round_ms`). The **repeat spread** of a calibration
   (:func:`repeat_spread`: the median over points of ``(max - min) / median`` of their round medians) says
   how much the machine disturbed the timings; ``lasnet-tvm calibrate`` refuses to write a profile above a
   limit.
2. **Split**: whole blocks of one stage (``heldout_stage``, default 2: shapes and channel counts no other
   stage has) are held out; the fit never sees them. With two or more backbones, each is also left out in
   turn (:func:`leave_one_arch_out`: fitted on the others' fit points, scored on all of its points).
3. **Fit**: with ``schedule: default`` (the tiles the default schedules use), the ``efficiency`` parameters
   minimize a robust sum of squared ``log(pred / meas)`` over the fit set (``scipy.optimize.least_squares``,
   log-parameters with bounds, a few starts); ``call_us`` (a kernel without active patches) only when the fit
   set has such points, else it keeps the source profile's value. Then, optionally,
   one latency factor per op kind (``kernel_scale``, ridge-regularized in log space) for kernels whose
   schedule does better or worse than the model's best tile. The factors are kept only when they lower the
   leave-one-block-out MAPE within the fit set; the held-out set is not used for any choice.
4. **Report**: :func:`~.accuracy.accuracy` of the source and the calibrated profile on both sets, overall and
   per kernel.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np

from ..archs import BlockSpec, arch_spec
from ..errors import LasnetError
from .accuracy import accuracy
from .kernel_ops import PATCH_KERNELS, kernel_ops
from .ops import Op, op_latency
from .profiles import HardwareProfile, profile_to_dict

PARAMS = ("compute", "dram", "onchip", "dram_half_bytes", "onchip_half_bytes", "launch_us", "call_us")
#: Bounds of the fitted efficiency parameters.
BOUNDS = {"compute": (0.005, 1.0), "dram": (0.02, 1.0), "onchip": (0.005, 1.0), "dram_half_bytes": (1.0, 4096.0),
          "onchip_half_bytes": (1.0, 4096.0), "launch_us": (0.05, 500.0), "call_us": (0.05, 500.0)}
#: Backbones a calibration measures by default: dense and grouped 3x3 convs, blocks with and without SE.
DEFAULT_ARCHS = ("las_resnet50", "las_regnety_400mf")
#: Largest repeat spread (:func:`repeat_spread`) at which ``lasnet-tvm calibrate`` writes a profile.
MAX_SPREAD = 0.10
SCALE_PRIOR = 0.5  # ridge weight on log(kernel_scale), in units of one point's log residual
LOSS_SCALE = 0.1  # soft-L1 threshold of the log residuals (about 10 %): noisy points weigh less


@dataclass(frozen=True)
class Case:
    """One block to compile and measure; ``heldout`` blocks are kept out of the fit."""

    label: str
    spec: BlockSpec
    heldout: bool
    variants: tuple = ("static", "all", "none")
    rates: tuple = (0.0, 0.25, 0.75)  # fusion "all"; other dynamic variants run at the median non-zero rate
    arch: str = ""


@dataclass
class Point:
    """One distinct kernel call and its samples (ms)."""

    case: str
    heldout: bool
    variant: str
    rate: float
    kernel: str
    params: dict
    P: int | None
    out: str
    samples_ms: list = field(default_factory=list)
    arch: str = ""
    rounds: dict = field(default_factory=dict)  # round -> its samples (ms)

    @property
    def measured_ms(self) -> float:
        return float(np.median(self.samples_ms))

    @property
    def round_ms(self) -> list[float]:
        """Median of each round's samples."""
        return [float(np.median(v)) for _, v in sorted(self.rounds.items())]

    @property
    def spread(self) -> float | None:
        """``(max - min) / median`` of the round medians (None with fewer than two rounds)."""
        r = self.round_ms
        return (max(r) - min(r)) / float(np.median(r)) if len(r) >= 2 else None

    def ops(self) -> list[Op]:
        return kernel_ops(self.kernel, self.params, self.P or 0, out=self.out)


# ------------------------------------------------------------------------------------------------ cases
def _pick(blocks: list[BlockSpec], stage: int) -> tuple[BlockSpec | None, BlockSpec | None]:
    st = [b for b in blocks if b.stage == stage]
    plain = [b for b in st if not b.downsample]
    return (plain[0] if plain else None), (st[0] if st else None)


def _tiny(b: BlockSpec) -> BlockSpec:
    """A small copy of block ``b`` (channels / 16, 8 x 8 input, S = 2) for quick runs."""
    def ch(c: int) -> int:
        return max(8, c // 16 // 8 * 8)

    cm = ch(b.c_mid)
    return replace(b, c_in=ch(b.c_in), c_mid=cm, c_out=ch(b.c_out), groups=cm // 8 if b.groups > 1 else 1,
                   se_channels=max(4, b.se_channels // 16) if b.se_channels else 0, in_size=8,
                   out_size=-(-8 // b.stride), S=2)


def default_cases(archs: Sequence[str], quick: bool = False, heldout_stage: int = 2) -> list[Case]:
    """Blocks measured by ``calibrate``.

    Full: per stage, its first identity block at two granularities (stage 4: one) and its first block (with
    the downsample branch). Quick: a tiny copy of each of the first three stages' identity blocks, static and
    fused only, one rate. Blocks of ``heldout_stage`` are held out.
    """
    per_stage = {1: (4, 2), 2: (4, 2), 3: (2, 1), 4: (1,)}
    cases: dict[tuple, Case] = {}
    for arch in archs:
        blocks = list(arch_spec(arch).blocks)
        for stage in (1, 2, 3) if quick else (1, 2, 3, 4):
            plain, first = _pick(blocks, stage)
            held = stage == heldout_stage
            if quick:
                b = _tiny(plain or first)
                cases.setdefault((arch, stage), Case(
                    f"{arch} {b.name} tiny S=2", b, held, ("static", "all"), (0.5,), arch))
                continue
            todo = [(plain, S) for S in per_stage[stage] if plain is not None]
            if first is not None and first is not plain:
                todo.append((first, per_stage[stage][0]))
            for b, S in todo:
                s = replace(b, S=min(S, b.out_size))
                key = (s.c_in, s.c_mid, s.c_out, s.stride, s.groups, s.se_channels, s.in_size, s.S)
                cases.setdefault(key, Case(f"{arch} {s.name} S={s.S}", s, held, arch=arch))
    return list(cases.values())


# ------------------------------------------------------------------------------------------------ measure
def _folded(spec: BlockSpec, seed: int):
    import torch

    from ..models.synthetic import random_folded_block

    fb = random_folded_block(spec, seed)
    if spec.se_channels and fb.se is None:
        gen = torch.Generator().manual_seed(seed + 1)
        R, C = spec.se_channels, spec.c_mid
        fb.se = (torch.randn(R, C, generator=gen) / math.sqrt(C), torch.zeros(R),
                 torch.randn(C, R, generator=gen) / math.sqrt(R), torch.zeros(C))
    return fb


def measure(cases: Sequence[Case], target="llvm", rounds: int = 3, repeat: int = 5, min_repeat_ms: float = 5,
            seed: int = 0, progress: Callable[[int], None] | None = None) -> list[Point]:
    """Compile every case and time its kernels; returns one :class:`Point` per distinct kernel call.

    ``progress(n)`` is called after each unit of work (a compilation or a timed block run); there are
    ``work_units(cases, rounds)`` of them.
    """
    from ..models.synthetic import input_at_rate
    from ..block_runtime import CompiledBlock

    tick = progress or (lambda n: None)
    runs = []
    for case in cases:
        fb = _folded(case.spec, seed)
        for v in case.variants:
            blk = CompiledBlock.build(fb, target, fusion="all" if v == "static" else v, static=v == "static")
            tick(1)
            mid = float(np.median([r for r in case.rates if r > 0] or case.rates))
            rates = (1.0,) if v == "static" else case.rates if v == "all" else (mid,)
            runs += [(case, v, r, blk, input_at_rate(case.spec, r, seed)[0].to(blk.device)) for r in rates]
    points: dict[tuple, Point] = {}
    for rnd in range(rounds):
        for case, v, rate, blk, x in runs:
            timed = blk.time_steps(x, repeat=repeat, min_repeat_ms=min_repeat_ms)
            P = None if v == "static" else blk.active_count()  # scatter(-add) read P patches too
            for st, res in zip(blk.steps, timed):
                p = P if res["kernel"] in PATCH_KERNELS else None
                key = (res["kernel"], json.dumps(res["params"], sort_keys=True), p)
                if key not in points:
                    points[key] = Point(case.label, case.heldout, v, rate, res["kernel"], dict(res["params"]), p,
                                        st.outputs[0][0], arch=case.arch)
                points[key].samples_ms += res["samples_ms"]
                points[key].rounds.setdefault(rnd, []).extend(res["samples_ms"])
            tick(1)
    return [p for p in points.values() if p.measured_ms > 0]


def repeat_spread(points: Sequence[Point]) -> float | None:
    """Median over points of their :attr:`Point.spread` (None with fewer than two rounds)."""
    sp = [p.spread for p in points if p.spread is not None]
    return float(np.median(sp)) if sp else None


def work_units(cases: Sequence[Case], rounds: int) -> int:
    n_build = sum(len(c.variants) for c in cases)
    n_run = sum(1 if v != "all" else len(c.rates) for c in cases for v in c.variants)
    return n_build + rounds * n_run


# ------------------------------------------------------------------------------------------------ fit
def predict_ms(points: Sequence[Point], hw: HardwareProfile) -> np.ndarray:
    """Predicted latency of every point on ``hw`` (ms)."""
    return np.array([sum(op_latency(o, hw).total for o in p.ops()) * 1e3 for p in points])


def _params(hw: HardwareProfile) -> dict[str, float]:
    return {k: float(getattr(hw.efficiency, k)) for k in PARAMS}


def fitted_params(points: Sequence[Point]) -> tuple[str, ...]:
    """The efficiency parameters the points constrain: ``call_us`` only with points without active patches."""
    zero = any(p.P == 0 for p in points)
    return tuple(k for k in PARAMS if k != "call_us" or zero)


def fit_efficiency(points: Sequence[Point], hw: HardwareProfile, starts: int = 3) -> HardwareProfile:
    """Fit the efficiency parameters of ``hw`` to ``points`` (see the module docstring); kernel scales cleared."""
    from scipy.optimize import least_squares

    if len(points) < len(PARAMS):
        raise LasnetError(f"calibration needs at least {len(PARAMS)} fit points, got {len(points)}")
    hw = hw.with_(kernel_scale=())
    names = fitted_params(points)
    meas = np.log([p.measured_ms for p in points])
    lo = np.log([BOUNDS[k][0] for k in names])
    hi = np.log([BOUNDS[k][1] for k in names])

    def at(x):
        return hw.with_(**{k: float(v) for k, v in zip(names, np.exp(x))})

    def resid(x):
        return np.log(predict_ms(points, at(x))) - meas

    x0 = np.clip(np.log([max(_params(hw)[k], 1e-9) for k in names]), lo + 1e-6, hi - 1e-6)
    inits = [x0, (lo + hi) / 2, lo + 0.25 * (hi - lo)][:max(1, starts)]
    best = None
    for x in inits:
        r = least_squares(resid, x, bounds=(lo, hi), loss="soft_l1", f_scale=LOSS_SCALE, diff_step=1e-3,
                          max_nfev=200)
        if best is None or r.cost < best.cost:
            best = r
    return at(best.x)


def fit_kernel_scale(points: Sequence[Point], hw: HardwareProfile) -> HardwareProfile:
    """Fit one latency factor per op kind of ``points`` on top of ``hw``'s efficiency (ridge in log space)."""
    from scipy.optimize import least_squares

    hw = hw.with_(kernel_scale=())
    kinds = sorted({o.kind for p in points for o in p.ops()})
    col = {k: i for i, k in enumerate(kinds)}
    launch = np.zeros(len(points))
    rest = np.zeros((len(points), len(kinds)))
    for i, p in enumerate(points):
        for o in p.ops():
            lat = op_latency(o, hw)
            launch[i] += lat.launch * 1e3
            rest[i, col[o.kind]] += (lat.total - lat.launch) * 1e3
    meas = np.log([p.measured_ms for p in points])

    def resid(s):
        return np.concatenate([np.log(launch + rest @ np.exp(s)) - meas, SCALE_PRIOR * s])

    r = least_squares(resid, np.zeros(len(kinds)), bounds=(np.log(0.05), np.log(20.0)), loss="soft_l1",
                      f_scale=LOSS_SCALE)
    return hw.with_(kernel_scale=tuple((k, round(float(v), 4)) for k, v in zip(kinds, np.exp(r.x))))


def _mape(points: Sequence[Point], pred: np.ndarray) -> float:
    m = np.array([p.measured_ms for p in points])
    return float(np.mean(np.abs(pred - m) / m))


def cross_validate(points: Sequence[Point], hw: HardwareProfile, fitted: HardwareProfile) -> dict | None:
    """Leave-one-block-out MAPE within the fit set, efficiency only vs efficiency + kernel scales.

    Each fold restarts the efficiency fit from ``fitted`` (one start). None with fewer than 3 blocks.
    """
    cases = sorted({p.case for p in points})
    if len(cases) < 3:
        return None
    pred_g, pred_s = np.zeros(len(points)), np.zeros(len(points))
    for c in cases:
        train = [p for p in points if p.case != c]
        idx = [i for i, p in enumerate(points) if p.case == c]
        g = fit_efficiency(train, fitted, starts=1)
        s = fit_kernel_scale(train, g)
        test = [points[i] for i in idx]
        pred_g[idx], pred_s[idx] = predict_ms(test, g), predict_ms(test, s)
    return {"folds": len(cases), "mape_efficiency_only": _mape(points, pred_g),
            "mape_with_kernel_scale": _mape(points, pred_s)}


def leave_one_arch_out(points: Sequence[Point], fitted: HardwareProfile) -> dict | None:
    """Each backbone left out in turn: efficiency fitted (one start from ``fitted``) on the other backbones' fit
    points, scored on all points of the one left out. None with fewer than two backbones."""
    archs = sorted({p.arch for p in points if p.arch})
    if len(archs) < 2:
        return None
    out = {}
    for arch in archs:
        train = [p for p in points if p.arch != arch and not p.heldout]
        test = [p for p in points if p.arch == arch]
        if len(train) < len(PARAMS) or not test:
            continue
        g = fit_efficiency(train, fitted, starts=1)
        out[arch] = {"fitted_on": sorted({p.arch for p in train}), "parameters": _params(g),
                     **_acc(test, predict_ms(test, g))}
    return out or None


# ------------------------------------------------------------------------------------------------ report
def _acc(points: Sequence[Point], pred: np.ndarray) -> dict | None:
    if not points:
        return None
    out = {"overall": accuracy([p.measured_ms for p in points], pred)}
    kernels = sorted({p.kernel for p in points})
    out["per_kernel"] = {k: accuracy([p.measured_ms for p in points if p.kernel == k],
                                     pred[[i for i, p in enumerate(points) if p.kernel == k]]) for k in kernels}
    return out


def accuracy_table(points: Sequence[Point], hw: HardwareProfile) -> dict:
    """Accuracy of ``hw`` on the fit and held-out points (overall and per kernel)."""
    fit = [p for p in points if not p.heldout]
    held = [p for p in points if p.heldout]
    return {"fit": _acc(fit, predict_ms(fit, hw)), "heldout": _acc(held, predict_ms(held, hw))}


@dataclass
class Calibration:
    """Result of :func:`calibrate`: the source and calibrated profiles and everything the report shows."""

    source: HardwareProfile
    calibrated: HardwareProfile
    efficiency_only: HardwareProfile
    points: list
    cv: dict | None
    accuracy: dict  # profile label -> accuracy_table
    settings: dict
    loao: dict | None = None  # leave_one_arch_out

    def report(self) -> dict:
        """JSON-ready report (points included)."""
        src, cal = self.source, self.calibrated
        pts = []
        p_src, p_cal = predict_ms(self.points, src), predict_ms(self.points, cal)
        for p, a, b in zip(self.points, p_src, p_cal):
            pts.append({"case": p.case, "heldout": p.heldout, "variant": p.variant, "rate": p.rate,
                        "kernel": p.kernel, "params": p.params, "P": p.P, "measured_ms": round(p.measured_ms, 5),
                        "predicted_ms_uncalibrated": round(float(a), 5), "predicted_ms_calibrated": round(float(b), 5),
                        "arch": p.arch, "round_ms": [round(s, 5) for s in p.round_ms],
                        "samples_ms": [round(s, 5) for s in p.samples_ms]})
        return {"settings": self.settings,
                "profile": {"source": {"name": src.name, "file": src.source}, "calibrated_name": cal.name},
                "parameters": {"uncalibrated": _params(src), "calibrated": _params(cal),
                               "kernel_scale": dict(cal.kernel_scale)},
                "model_selection": {"cross_validation": self.cv, "kernel_scale_used": bool(cal.kernel_scale)},
                "leave_one_arch_out": self.loao, "repeat_spread": repeat_spread(self.points),
                "calibrated_profile": profile_to_dict(cal), "accuracy": self.accuracy,
                "n_points": {"fit": sum(not p.heldout for p in self.points),
                             "heldout": sum(p.heldout for p in self.points)},
                "points": pts}

    def section(self) -> dict:
        """The ``calibration:`` section of the calibrated profile."""
        def brief(t):
            return None if t is None else {k: (round(v, 4) if isinstance(v, float) else v)
                                           for k, v in t["overall"].items()}

        acc = {lab: {s: brief(t[s]) for s in ("fit", "heldout")} for lab, t in self.accuracy.items()
               if lab in ("uncalibrated", "calibrated")}
        per = {k: round(v["mape"], 4) for k, v in ((self.accuracy["calibrated"]["heldout"] or {}).get(
            "per_kernel", {})).items()}
        return {"date": self.settings["date"], "source_profile": self.source.name, "source_file": self.source.source,
                "target": self.settings["target"], "measured_on": self.settings.get("measured_on", ""),
                "load_average": self.settings.get("load_average"),
                "archs": list(self.settings["archs"]), "heldout": self.settings["heldout"],
                "n_points": len(self.points), "n_fit": sum(not p.heldout for p in self.points),
                "n_heldout": sum(p.heldout for p in self.points),
                "kernel_scale_used": bool(self.calibrated.kernel_scale), "accuracy": acc,
                "heldout_mape_per_kernel": per, "repeat_spread": _round(repeat_spread(self.points)),
                "leave_one_arch_out": {a: {"mape": round(v["overall"]["mape"], 4),
                                           "spearman": _round(v["overall"]["spearman"])}
                                       for a, v in (self.loao or {}).items()} or None}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def calibrate(points: Sequence[Point], source: HardwareProfile, settings: dict, kernel_scale: str = "auto",
              name: str | None = None) -> Calibration:
    """Fit ``source`` to the fit points and score both profiles.

    ``kernel_scale``: ``"auto"`` (keep the per-kind factors when cross-validation within the fit set prefers
    them), ``"on"`` or ``"off"``.
    """
    fit = [p for p in points if not p.heldout]
    if kernel_scale not in ("auto", "on", "off"):
        raise LasnetError(f"kernel_scale must be auto, on or off, got {kernel_scale!r}")
    base = source.with_(schedule="default")  # the kernels measured run their default schedules
    eff = fit_efficiency(fit, base)
    scaled = fit_kernel_scale(fit, eff)
    cv = cross_validate(fit, base, eff) if kernel_scale == "auto" else None
    use = kernel_scale == "on" or (cv is not None and cv["mape_with_kernel_scale"] < cv["mape_efficiency_only"])
    label = name or f"{source.name}-calibrated"
    cal = replace(scaled if use else eff, name=label, source="")
    eff = replace(eff, name=label, source="")
    acc = {"uncalibrated": accuracy_table(points, source), "calibrated": accuracy_table(points, cal),
           "efficiency_only": accuracy_table(points, eff)}
    if use:
        acc["with_kernel_scale"] = acc["calibrated"]
    else:
        acc["with_kernel_scale"] = accuracy_table(points, replace(scaled, name=label))
    settings = dict(settings, date=settings.get("date") or time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    loao = leave_one_arch_out(points, eff)
    out = Calibration(source, cal, eff, list(points), cv, acc, settings, loao)
    out.calibrated = replace(cal, calibration=out.section())
    return out
