"""``lasnet-tvm calibrate``: fit a hardware profile's efficiency parameters to kernel measurements."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..archs import ARCHS
from ..errors import LasnetError

#: Share of the CPUs other processes may keep busy while ``calibrate`` measures before it warns
OTHERS_BUSY = 0.25


def check_output(path: Path) -> None:
    """Fail early (before measuring) when the profile cannot be written to ``path`` (its folder must exist)."""
    from ..fsutil import check_writable

    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise LasnetError(f"{path}: folder {parent} does not exist")
    check_writable(path, "calibrated profile")


def write_profile(path: Path, hw) -> Path:
    """Write ``hw`` as YAML atomically (temporary file beside ``path``, validated, then renamed)."""
    import yaml

    from ..fsutil import atomic_path
    from ..predictor.profiles import load_profile, profile_to_dict

    text = (f"# Calibrated by lasnet-tvm calibrate from profile {hw.calibration['source_profile']!r} "
            f"on {hw.calibration['date']}\n" + yaml.safe_dump(profile_to_dict(hw), sort_keys=False))
    with atomic_path(path, "calibrated profile") as tmp:
        tmp.write_text(text)
        load_profile(tmp)  # never leave an unloadable profile behind
    return path


def _source_profile(device: str, profile: str | None):
    """The profile to calibrate and the TVM target that measures it; refuses a GPU profile without a GPU."""
    from ..predictor.profiles import resolve_profile

    hw = resolve_profile(device, profile)
    if hw.kind == "gpu":
        import tvm

        if not tvm.cuda(0).exist:
            raise LasnetError(f"profile {hw.name!r} is a GPU profile and this machine has no CUDA GPU; "
                              "run calibrate on the device itself (or use --device local)")
        return hw, hw.target
    return hw, "llvm"  # a CPU profile is measured on this CPU (its own target may not run here)


def _fmt(a: dict | None, key: str) -> str:
    if a is None or a.get(key) is None:
        return "-"
    v = a[key]
    return f"{v * 100:.1f}%" if key in ("mape", "share_within") else f"{v:.3f}"


def summary(cal) -> list[str]:
    """The table printed at the end: accuracy per kernel and overall, uncalibrated vs calibrated."""
    rows = [f"{'kernel':<16}{'set':<9}{'n':>4}  {'MAPE':>7} {'<=10%':>7} {'rho':>6}   ->"
            f"  {'MAPE':>7} {'<=10%':>7} {'rho':>6}"]
    u, c = cal.accuracy["uncalibrated"], cal.accuracy["calibrated"]
    for split in ("fit", "heldout"):
        if u[split] is None:
            continue
        items = list(u[split]["per_kernel"]) + ["overall"]
        for k in items:
            a = u[split]["overall"] if k == "overall" else u[split]["per_kernel"][k]
            b = c[split]["overall"] if k == "overall" else c[split]["per_kernel"][k]
            rows.append(f"{k:<16}{split:<9}{a['n']:>4}  {_fmt(a, 'mape'):>7} {_fmt(a, 'share_within'):>7} "
                        f"{_fmt(a, 'spearman'):>6}   ->  {_fmt(b, 'mape'):>7} {_fmt(b, 'share_within'):>7} "
                        f"{_fmt(b, 'spearman'):>6}")
    e0, e1 = cal.source.efficiency, cal.calibrated.efficiency
    from ..predictor.calibrate import PARAMS

    rows.append("efficiency: " + ", ".join(f"{k} {getattr(e0, k):.4g} -> {getattr(e1, k):.4g}" for k in PARAMS))
    if cal.calibrated.kernel_scale:
        rows.append("kernel_scale: " + ", ".join(f"{k} {v:.3g}" for k, v in cal.calibrated.kernel_scale))
    for arch, a in (cal.loao or {}).items():
        o = a["overall"]
        rows.append(f"left out {arch} (fitted on {', '.join(a['fitted_on'])}): n={o['n']} MAPE {_fmt(o, 'mape')}, "
                    f"Spearman {_fmt(o, 'spearman')}")
    if cal.cv is not None:
        rows.append(f"leave-one-block-out MAPE (fit set): efficiency only {cal.cv['mape_efficiency_only'] * 100:.1f}%, "
                    f"with kernel scales {cal.cv['mape_with_kernel_scale'] * 100:.1f}%")
    return rows


@click.command()
@click.option("--device", "-d", default="local", show_default=True,
              help="Profile to calibrate: 'local' or a shipped CPU profile (measured on this machine), or a GPU "
                   "profile (needs that GPU here).")
@click.option("--profile", "profile", type=click.Path(dir_okay=False), default=None,
              help="Start from this profile YAML instead of --device's.")
@click.option("--output", "-o", required=True, type=click.Path(),
              help="Calibrated profile YAML to write; as NAME.yaml in the user profile folder "
              "(~/.lasnet-tvm/hw_profiles/, or $LASNET_TVM_PROFILES) every command finds it as --device NAME.")
@click.option("--arch", "-a", "archs", multiple=True, type=click.Choice(ARCHS),
              help="Backbone whose blocks are measured (repeatable; default las_resnet50 and las_regnety_400mf).")
@click.option("--quick", is_flag=True, help="Tiny blocks, one round: a smoke test, not a calibration.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write the full report (every point, accuracy per kernel) as JSON.")
@click.option("--target", default=None, help="TVM target of the measurements (default: this CPU, or the GPU "
                                            "profile's target).")
@click.option("--heldout-stage", default=2, show_default=True, type=click.IntRange(1, 4),
              help="Stage whose blocks are held out of the fit.")
@click.option("--rounds", default=None, type=click.IntRange(1, 20), help="Timing rounds (default 3, quick 1).")
@click.option("--kernel-scale", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Per-op-kind latency factors: kept when cross-validation within the fit set prefers them.")
@click.option("--max-spread", default=None, type=click.FloatRange(min=0),
              help="Refuse to write the profile when the repeat spread of the timings (median over kernels of "
                   "(max - min) / median of the round medians) exceeds this fraction (default 0.10; quick: no "
                   "limit).")
@click.option("--seed", default=0, show_default=True, type=int)
def calibrate(device, profile, output, archs, quick, json_path, target, heldout_stage, rounds, kernel_scale,
              max_spread, seed):
    """Measure kernels of LAS blocks, fit the profile's efficiency parameters, write the calibrated profile."""
    import time

    from .. import records
    from ..predictor import calibrate as C
    from ..timing import progress

    out = Path(output)
    check_output(out)
    if json_path:
        check_output(Path(json_path))
    hw, default_target = _source_profile(device, profile)
    archs = archs or C.DEFAULT_ARCHS
    tgt = target or default_target
    from ..targets import resolve_target, target_kind

    kind = target_kind(resolve_target(tgt))
    if (kind == "cuda") != (hw.kind == "gpu"):
        raise LasnetError(f"target {tgt!r} measures a {kind.upper()}, but profile {hw.name!r} is a "
                          f"{hw.kind.upper()} profile")
    if hw.kind == "cpu" and hw.pes != (os.cpu_count() or hw.pes):
        click.echo(f"note: profile {hw.name!r} has {hw.pes} cores, this machine {os.cpu_count()}", err=True)
    rounds = rounds or (1 if quick else 3)
    cases = C.default_cases(archs, quick, heldout_stage)
    if not any(c.heldout for c in cases) or all(c.heldout for c in cases):
        raise LasnetError(f"held-out stage {heldout_stage} leaves no fit or no held-out blocks")
    where = records.cpu_model() if kind == "cpu" else "GPU"
    click.echo(f"calibrating {hw.name} on {where} ({tgt}): {len(cases)} blocks "
               f"of {', '.join(archs)}, stage {heldout_stage} held out, {rounds} round(s)", err=True)
    load_before = os.getloadavg()
    bar = progress(C.work_units(cases, rounds), "measuring kernels")
    try:
        with records.OtherLoad() as others:
            points = C.measure(cases, tgt, rounds=rounds, repeat=3 if quick else 5,
                               min_repeat_ms=1 if quick else 5, seed=seed, progress=bar.update)
    finally:
        bar.close()
    load_after = os.getloadavg()
    spread = C.repeat_spread(points)
    limit = max_spread if max_spread is not None else (None if quick else C.MAX_SPREAD)
    load = f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after, {os.cpu_count()} CPUs"
    if others.share is not None:
        load += f", other processes {others.share:.0%} of the CPUs"
    if others.share is not None and others.share > OTHERS_BUSY:
        click.echo(f"warning: other processes kept the machine busy while measuring ({load})", err=True)
    if spread is not None and limit is not None and spread > limit:
        raise LasnetError(f"repeat spread {spread:.1%} exceeds --max-spread {limit:.1%} ({load}): timings too "
                          f"noisy, no profile written; rerun on a quiet machine or with more --rounds")
    if spread is not None and limit is not None and spread > limit / 2:
        click.echo(f"warning: repeat spread {spread:.1%} of the kernel timings is over half the limit "
                   f"{limit:.1%}: the fitted parameters may move between calibrations", err=True)
    click.echo(f"{len(points)} kernel points measured (repeat spread "
               f"{'-' if spread is None else f'{spread:.1%}'}, {load}); fitting ...", err=True)
    settings = {"device": device, "target": str(tgt), "archs": list(archs), "quick": quick, "rounds": rounds,
                "heldout": f"stage {heldout_stage} blocks", "seed": seed, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "measured_on": records.cpu_model() if kind == "cpu" else "cuda",
                "load_average": {"before": [round(v, 2) for v in load_before],
                                 "after": [round(v, 2) for v in load_after]},
                "other_processes_cpu_share": None if others.share is None else round(others.share, 3),
                "repeat_spread": spread, "max_spread": limit,
                "cases": [{"label": c.label, "heldout": c.heldout, "variants": list(c.variants), "rates": list(c.rates)}
                          for c in cases]}
    cal = C.calibrate(points, hw, settings, kernel_scale)
    write_profile(out, cal.calibrated)
    if json_path:
        report = cal.report()
        report.update(**records.provenance(), uncommitted_files=records.git_dirty_files())
        records.write_json(json_path, report)
    for row in summary(cal):
        click.echo(row)
    click.echo(f"wrote {out}" + (f" and {json_path}" if json_path else ""))
