"""``lasnet-tvm predict``, ``lasnet-tvm devices`` and ``lasnet-tvm profile-device``: the latency predictor."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..archs import ARCHS
from ..block_plan import Fusion
from .types import COUNT, GRANULARITY, MASKER, NON_NEGATIVE, RATES


def _profile(device: str, profile: str | None):
    from ..predictor.profiles import resolve_profile

    return resolve_profile(device, profile)


def _ms(x: float) -> float:
    return round(x * 1e3, 4)


def _block_json(b) -> dict:
    return {"name": b.name, "stage": b.stage, "S": b.S, "rate": b.rate, "masker": str(b.masker),
            "static_ms": _ms(b.static_s),
            "dynamic_ms": _ms(b.dynamic_s), "ratio": round(b.ratio, 4), "dominant": b.dominant,
            "ops": {o.name: round(o.total * 1e3, 6) for o in b.dynamic},
            "static_ops": {o.name: round(o.total * 1e3, 6) for o in b.static}}


@click.command()
@click.option("--device", "-d", default="v100", show_default=True,
              help="Profile name (see 'lasnet-tvm devices': shipped, or NAME.yaml in ~/.lasnet-tvm/hw_profiles/ "
              "or $LASNET_TVM_PROFILES) or 'local' for this machine.")
@click.option("--profile", "profile", type=click.Path(dir_okay=False), default=None,
              help="A profile YAML file (overrides --device).")
@click.option("--arch", "-a", type=click.Choice(ARCHS), default="las_resnet101", show_default=True)
@click.option("--granularity", "-g", type=GRANULARITY, default="4-4-2-1", show_default=True,
              help="S per stage ('4-4-2-1'), one S, or one S per block (comma separated).")
@click.option("--rate", "-r", type=RATES, default="0.5", show_default=True,
              help="Activation rate, one for all blocks or one per block (comma separated).")
@click.option("--fusion", type=click.Choice(Fusion.values()), default=Fusion.ALL.value,
              show_default=True, help="Operator fusion variant (paper Table 1).")
@click.option("--masker", type=MASKER, default="fused",
              show_default=True, help="Masker placement of every block (fusion all only): fused into conv1, separate "
              "(conv1 on the active windows), or auto (the cheaper one per block, as compile --masker auto).")
@click.option("--batch", type=COUNT, default=1, show_default=True)
@click.option("--input-size", type=COUNT, default=224, show_default=True)
@click.option("--search-granularity", is_flag=True, help="Choose S per stage with the model (last stage S=1).")
@click.option("--tolerance", type=NON_NEGATIVE, default=0.05, show_default=True,
              help="With --search-granularity: smallest S within this fraction of the stage's best latency.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def predict(device, profile, arch, granularity, rate, fusion, masker, batch, input_size, search_granularity,
            tolerance, as_json):
    """Predict the latency of a LAS network and its static counterpart on a device."""
    from ..errors import LasnetError
    from ..predictor.network import predict_network
    from ..predictor.search import search_granularity as search

    if masker == "separate" and fusion != Fusion.ALL.value:
        raise LasnetError(f"--masker separate needs --fusion all, not {fusion}")
    hw = _profile(device, profile)
    rates = rate
    search_result = None
    if search_granularity:
        search_result = search(arch, hw, rates, fusion, batch, input_size, tolerance, masker=masker)
        net = search_result.prediction
    else:
        net = predict_network(arch, hw, granularity, rates, fusion, batch, input_size, masker)
    if as_json:
        out = {"device": hw.name, "arch": arch, "granularity": net.granularity, "rate": rates, "fusion": fusion,
               "masker": masker, "batch": batch, "input_size": input_size, "static_ms": _ms(net.static_s),
               "dynamic_ms": _ms(net.dynamic_s), "ratio": round(net.ratio, 4),
               "stem_ms": _ms(sum(o.total for o in net.stem)), "head_ms": _ms(sum(o.total for o in net.head)),
               "blocks": [_block_json(b) for b in net.blocks]}
        if search_result is not None:
            out["search"] = {"per_stage": list(search_result.per_stage), "tolerance": tolerance,
                             "stage_ms": [{str(S): _ms(v) for S, v in sc.items()} for sc in search_result.scores]}
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"{arch} on {hw.name} ({hw.description or hw.kind}), granularity {net.granularity}, rate {rate}, "
               f"fusion {fusion}, masker {masker}, batch {batch}")
    if search_result is not None:
        for s, (S, sc) in enumerate(zip(search_result.per_stage, search_result.scores), start=1):
            opts = "  ".join(f"S={k}:{v * 1e3:.3f}" for k, v in sc.items())
            click.echo(f"stage {s}: chosen S={S}   ({opts} ms)")
    click.echo(f"{'block':<34}{'stage':>6}{'S':>4}{'static ms':>11}{'dynamic ms':>12}{'r_l':>7}  {'bound':<8}masker")
    for b in net.blocks:
        click.echo(f"{b.name:<34}{b.stage:>6}{b.S:>4}{b.static_s * 1e3:>11.4f}{b.dynamic_s * 1e3:>12.4f}"
                   f"{b.ratio:>7.3f}  {b.dominant:<8}{b.masker}")
    click.echo(f"stem + head: {sum(o.total for o in net.stem + net.head) * 1e3:.4f} ms")
    click.echo(f"total: static {net.static_s * 1e3:.3f} ms, dynamic {net.dynamic_s * 1e3:.3f} ms, "
               f"ratio {net.ratio:.3f}")


def _tracker_boards(tracker: str) -> list[dict]:
    """One row per board key at the TVM RPC tracker ``HOST:PORT``: its servers, free ones, pending requests."""
    from ..tuning.measure import parse_tracker, tracker_summary

    summary = tracker_summary(*parse_tracker(tracker))
    servers: dict[str, list[str]] = {}
    for s in summary.get("server_info", []):
        servers.setdefault(s["key"].split(":", 1)[-1], []).append(":".join(map(str, s["addr"])))
    queue = summary.get("queue_info", {})
    return [{"key": k, "servers": sorted(servers.get(k, [])), "free": int(queue.get(k, {}).get("free", 0)),
             "pending": int(queue.get(k, {}).get("pending", 0))} for k in sorted(set(servers) | set(queue))]


def _echo_tracker(tracker: str, as_json: bool) -> None:
    rows = _tracker_boards(tracker)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"RPC tracker {tracker}: no board registered")
        return
    click.echo(f"{'key':<20}{'servers':>8}{'free':>6}{'pending':>9}  addresses")
    for r in rows:
        click.echo(f"{r['key']:<20}{len(r['servers']):>8}{r['free']:>6}{r['pending']:>9}  {' '.join(r['servers'])}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--tracker", default=None, metavar="HOST:PORT",
              help="List the boards registered at this TVM RPC tracker (keys, servers, free, pending) instead.")
def devices(as_json, tracker):
    """List the hardware profiles: shipped ones, the user's (~/.lasnet-tvm/hw_profiles/ or $LASNET_TVM_PROFILES,
    where profile-device writes) and the cached measurement of this machine; `from` says which. With --tracker:
    the boards a TVM RPC tracker has."""
    if tracker is not None:
        return _echo_tracker(tracker, as_json)
    from ..predictor.profiles import all_profiles, load_profile, local_profile_path

    known = all_profiles()
    rows = [(load_profile(path), where) for path, where in known.values()]
    local = local_profile_path()
    if "local" not in known and local.exists():
        rows.append((load_profile(local), "cache"))
    if as_json:
        click.echo(json.dumps([{"name": p.name, "kind": p.kind, "pes": p.pes, "lanes": p.lanes,
                                "clock_mhz": p.clock_mhz, "dram_gbps": p.dram_gbps,
                                "peak_gflops": round(p.peak_gflops, 1), "target": p.target, "source": p.source,
                                "origin": where} for p, where in rows], indent=2))
        return
    click.echo(f"{'name':<12}{'kind':<5}{'PEs':>5}{'lanes':>6}{'MHz':>7}{'GB/s':>8}{'GFLOP/s':>9}  {'from':<8}target")
    for p, where in rows:
        click.echo(f"{p.name:<12}{p.kind:<5}{p.pes:>5}{p.lanes:>6}{p.clock_mhz:>7.0f}{p.dram_gbps:>8.1f}"
                   f"{p.peak_gflops:>9.0f}  {where:<8}{p.target_str()}")
    if "local" not in known and not local.exists():
        click.echo("local: not measured yet (measured on first use of --device local, or run profile-device)")


@click.command("profile-device")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Where to write the profile (default: local.yaml in the user profile folder, "
              "~/.lasnet-tvm/hw_profiles/ or $LASNET_TVM_PROFILES, used by --device local).")
def profile_device(output):
    """Measure this machine (cores, FP32 peak of our conv1x1 kernel, copy bandwidth, caches); write a CPU profile.

    A profile written to the user profile folder (~/.lasnet-tvm/hw_profiles/NAME.yaml, or $LASNET_TVM_PROFILES)
    is found by every command as --device NAME, after the shipped profiles of that name."""
    from ..fsutil import atomic_path, check_writable
    from ..predictor.profiles import load_profile, user_profiles_dir, write_local_profile

    path = Path(output) if output else user_profiles_dir() / "local.yaml"
    check_writable(path, "profile")
    with atomic_path(path, "profile") as tmp:
        write_local_profile(tmp)
        p = load_profile(tmp)
    click.echo(f"wrote {path}: {p.pes} cores x {p.lanes} lanes at {p.clock_mhz:.0f} MHz, compute efficiency "
               f"{p.efficiency.compute:.2f}, DRAM {p.dram_gbps:.1f} GB/s")
