"""``lasnet-tvm predict``, ``lasnet-tvm devices`` and ``lasnet-tvm profile-device``: the latency predictor."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..archs import ARCHS
from ..block_plan import Fusion
from ..errors import LasnetError


def _profile(device: str, profile: str | None):
    from ..predictor.profiles import resolve_profile

    return resolve_profile(device, profile)


def _rates(text: str) -> float | list[float]:
    try:
        values = [float(v) for v in text.replace("-", ",").split(",") if v.strip()] if "," in text else [float(text)]
    except ValueError:
        raise LasnetError(f"rate {text!r}: expected a number in [0, 1] or one per block separated by ','") from None
    return values[0] if len(values) == 1 else values


def _ms(x: float) -> float:
    return round(x * 1e3, 4)


def _block_json(b) -> dict:
    return {"name": b.name, "stage": b.stage, "S": b.S, "rate": b.rate, "static_ms": _ms(b.static_s),
            "dynamic_ms": _ms(b.dynamic_s), "ratio": round(b.ratio, 4), "dominant": b.dominant,
            "ops": {o.name: round(o.total * 1e3, 6) for o in b.dynamic},
            "static_ops": {o.name: round(o.total * 1e3, 6) for o in b.static}}


@click.command()
@click.option("--device", "-d", default="v100", show_default=True,
              help="Profile name (see 'lasnet-tvm devices') or 'local' for this machine.")
@click.option("--profile", "profile", type=click.Path(dir_okay=False), default=None,
              help="A profile YAML file (overrides --device).")
@click.option("--arch", "-a", type=click.Choice(ARCHS), default="las_resnet101", show_default=True)
@click.option("--granularity", "-g", default="4-4-2-1", show_default=True,
              help="S per stage ('4-4-2-1'), one S, or one S per block (comma separated).")
@click.option("--rate", "-r", default="0.5", show_default=True,
              help="Activation rate, one for all blocks or one per block (comma separated).")
@click.option("--fusion", type=click.Choice(Fusion.values()), default=Fusion.ALL.value,
              show_default=True, help="Operator fusion variant (paper Table 1).")
@click.option("--batch", type=int, default=1, show_default=True)
@click.option("--input-size", type=int, default=224, show_default=True)
@click.option("--search-granularity", is_flag=True, help="Choose S per stage with the model (last stage S=1).")
@click.option("--tolerance", type=float, default=0.05, show_default=True,
              help="With --search-granularity: smallest S within this fraction of the stage's best latency.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def predict(device, profile, arch, granularity, rate, fusion, batch, input_size, search_granularity, tolerance,
            as_json):
    """Predict the latency of a LAS network and its static counterpart on a device."""
    from ..predictor.network import predict_network
    from ..predictor.search import search_granularity as search

    hw = _profile(device, profile)
    rates = _rates(rate)
    search_result = None
    if search_granularity:
        search_result = search(arch, hw, rates, fusion, batch, input_size, tolerance)
        net = search_result.prediction
    else:
        net = predict_network(arch, hw, granularity, rates, fusion, batch, input_size)
    if as_json:
        out = {"device": hw.name, "arch": arch, "granularity": net.granularity, "rate": rates, "fusion": fusion,
               "batch": batch, "input_size": input_size, "static_ms": _ms(net.static_s),
               "dynamic_ms": _ms(net.dynamic_s), "ratio": round(net.ratio, 4),
               "stem_ms": _ms(sum(o.total for o in net.stem)), "head_ms": _ms(sum(o.total for o in net.head)),
               "blocks": [_block_json(b) for b in net.blocks]}
        if search_result is not None:
            out["search"] = {"per_stage": list(search_result.per_stage), "tolerance": tolerance,
                             "stage_ms": [{str(S): _ms(v) for S, v in sc.items()} for sc in search_result.scores]}
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"{arch} on {hw.name} ({hw.description or hw.kind}), granularity {net.granularity}, rate {rate}, "
               f"fusion {fusion}, batch {batch}")
    if search_result is not None:
        for s, (S, sc) in enumerate(zip(search_result.per_stage, search_result.scores), start=1):
            opts = "  ".join(f"S={k}:{v * 1e3:.3f}" for k, v in sc.items())
            click.echo(f"stage {s}: chosen S={S}   ({opts} ms)")
    click.echo(f"{'block':<34}{'stage':>6}{'S':>4}{'static ms':>11}{'dynamic ms':>12}{'r_l':>7}  bound")
    for b in net.blocks:
        click.echo(f"{b.name:<34}{b.stage:>6}{b.S:>4}{b.static_s * 1e3:>11.4f}{b.dynamic_s * 1e3:>12.4f}"
                   f"{b.ratio:>7.3f}  {b.dominant}")
    click.echo(f"stem + head: {sum(o.total for o in net.stem + net.head) * 1e3:.4f} ms")
    click.echo(f"total: static {net.static_s * 1e3:.3f} ms, dynamic {net.dynamic_s * 1e3:.3f} ms, "
               f"ratio {net.ratio:.3f}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def devices(as_json):
    """List the hardware profiles."""
    from ..predictor.profiles import load_profile, local_profile_path, shipped_profiles

    rows = [load_profile(p) for p in shipped_profiles().values()]
    local = local_profile_path()
    if "local" not in shipped_profiles() and local.exists():
        rows.append(load_profile(local))
    if as_json:
        click.echo(json.dumps([{"name": p.name, "kind": p.kind, "pes": p.pes, "lanes": p.lanes,
                                "clock_mhz": p.clock_mhz, "dram_gbps": p.dram_gbps,
                                "peak_gflops": round(p.peak_gflops, 1), "target": p.target, "source": p.source}
                               for p in rows], indent=2))
        return
    click.echo(f"{'name':<12}{'kind':<5}{'PEs':>5}{'lanes':>6}{'MHz':>7}{'GB/s':>8}{'GFLOP/s':>9}  target")
    for p in rows:
        click.echo(f"{p.name:<12}{p.kind:<5}{p.pes:>5}{p.lanes:>6}{p.clock_mhz:>7.0f}{p.dram_gbps:>8.1f}"
                   f"{p.peak_gflops:>9.0f}  {p.target_str()}")
    if not local.exists():
        click.echo("local: not measured yet (measured on first use of --device local, or run profile-device)")


@click.command("profile-device")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Where to write the profile (default: the user cache, used by --device local).")
def profile_device(output):
    """Measure this machine (cores, FP32 peak of our conv1x1 kernel, copy bandwidth, caches); write a CPU profile."""
    from ..predictor.profiles import load_profile, local_profile_path, write_local_profile

    path = write_local_profile(Path(output) if output else local_profile_path())
    p = load_profile(path)
    click.echo(f"wrote {path}: {p.pes} cores x {p.lanes} lanes at {p.clock_mhz:.0f} MHz, compute efficiency "
               f"{p.efficiency.compute:.2f}, DRAM {p.dram_gbps:.1f} GB/s")
