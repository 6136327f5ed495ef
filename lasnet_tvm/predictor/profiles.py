"""Hardware profiles: loading, validating and locating the YAML descriptions of devices.

A profile describes a device the way the paper's latency model sees it (Sec. 3.3, Appendix A, Table 4): a
number of processing engines (PEs: GPU streaming multiprocessors or CPU cores), each with ``lanes`` FP32 FMA
lanes at ``clock_mhz``, a three-level memory (off-chip DRAM, on-chip global memory = L2 / last-level cache,
PE-local memory = shared memory / L1+L2 of a core) and efficiency parameters that a calibration step may fit:

``efficiency.compute``
    Fraction of the FMA peak that a tuned kernel attains inside a PE.
``efficiency.dram`` / ``efficiency.onchip``
    Fraction of the nominal bandwidth that long contiguous streams attain.
``efficiency.dram_half_bytes`` / ``efficiency.onchip_half_bytes``
    Access-granularity model: a contiguous run of ``b`` bytes moves at ``b / (b + half)`` of the streaming
    bandwidth. A 4-byte-aligned run of ``b`` bytes at a random offset touches on average ``(b + g - 4) / g``
    transfer units of ``g`` bytes, hence the defaults ``half = g - 4``: 28 for GPUs (32-byte sectors), 60 for
    CPUs (64-byte cache lines). This is how small, scattered accesses at small S get slow.
``efficiency.launch_us``
    Fixed cost of one kernel launch (GPU) or parallel region (CPU).
``efficiency.call_us``
    Fixed cost of one kernel call, on top of its launches; all that a kernel with no work (no active
    patches), which launches nothing, costs.

A calibrated profile (``lasnet-tvm calibrate``) has ``schedule: default`` (tiles as the toolkit's default
schedules run them; ``search``, the default, takes every op's best tile) and may also hold ``kernel_scale``
(a factor per op kind on its memory and compute time, for kernels whose schedule does better or worse than the
model predicts) and a ``calibration`` section recording how it was fitted (date, source profile, points,
accuracy), which the model ignores.

Profiles are plain YAML files: ``hw_profiles/<name>.yaml``, shipped as package data, then the user's own in
:func:`user_profiles_dir` (``~/.lasnet-tvm/hw_profiles/``, or ``$LASNET_TVM_PROFILES``), where
``lasnet-tvm profile-device`` writes and where ``--device NAME`` also looks. ``local`` names this machine: see
:func:`local_profile_path`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..errors import LasnetError
from ..resources import hw_profiles_dir

KINDS = ("gpu", "cpu")
SCHEDULES = ("search", "default")

#: Defaults of the efficiency parameters per device kind (documented in the YAML files).
EFFICIENCY_DEFAULTS: dict[str, dict[str, float]] = {
    "gpu": dict(compute=0.8, dram=0.8, onchip=0.8, dram_half_bytes=28.0, onchip_half_bytes=28.0, launch_us=8.0,
                call_us=2.0),
    "cpu": dict(compute=0.7, dram=0.7, onchip=0.8, dram_half_bytes=60.0, onchip_half_bytes=60.0, launch_us=5.0,
                call_us=1.0),
}


@dataclass(frozen=True)
class Efficiency:
    """Efficiency parameters of the latency model (see the module docstring)."""

    compute: float
    dram: float
    onchip: float
    dram_half_bytes: float
    onchip_half_bytes: float
    launch_us: float
    call_us: float = 1.0


@dataclass(frozen=True)
class HardwareProfile:
    """One device.

    Attributes
    ----------
    name, kind : str
        Profile name (file stem) and ``"gpu"`` or ``"cpu"``.
    pes : int
        Processing engines (SMs or cores).
    lanes : int
        FP32 FMA lanes per PE (CUDA cores per SM; SIMD width x FMA units per core).
    clock_mhz : float
        Clock of the PEs.
    dram_gbps : float
        Off-chip bandwidth in GB/s (1e9 bytes/s).
    onchip_gbps : float
        Aggregate bandwidth of the on-chip global memory (L2 / LLC) to the PEs.
    pe_bytes_per_cycle : float
        Bandwidth of one PE's link to the on-chip global memory, bytes per clock.
    l2_kb, local_kb : float
        Capacity of the on-chip global memory and of one PE's local memory.
    target : str or dict
        TVM target (tag such as ``nvidia/jetson-tx2`` or a dict such as ``{"kind": "cuda", "arch": "sm_70"}``).
    efficiency : Efficiency
    description, source : str
        Free text; ``source`` is the file the profile came from.
    schedule : str
        ``"search"``: every op runs at its best tile (the paper's model; tuned kernels). ``"default"``: the
        tiles of the toolkit's default schedules where they are narrower (one patch per task for the patch
        convolutions); calibrated profiles, which are fitted to default-schedule kernels, use it.
    kernel_scale : tuple of (str, float)
        Calibrated latency factors per op kind (``(kind, factor)``, sorted; empty: none); see
        :meth:`kernel_scale_of`.
    calibration : dict or None
        What a calibration recorded (``calibration:`` section of the YAML; informative only).
    """

    name: str
    kind: str
    pes: int
    lanes: int
    clock_mhz: float
    dram_gbps: float
    onchip_gbps: float
    pe_bytes_per_cycle: float
    l2_kb: float
    local_kb: float
    target: Any
    efficiency: Efficiency
    description: str = ""
    source: str = field(default="", compare=False)
    schedule: str = "search"
    kernel_scale: tuple = ()
    calibration: Any = field(default=None, compare=False)

    def __hash__(self) -> int:  # target may be a dict; hash the figures the model uses
        return hash((self.name, self.kind, self.pes, self.lanes, self.clock_mhz, self.dram_gbps,
                     self.onchip_gbps, self.pe_bytes_per_cycle, self.l2_kb, self.local_kb, self.efficiency,
                     self.schedule, self.kernel_scale))

    def kernel_scale_of(self, kind: str) -> float:
        """Factor on the dram, on-chip and compute time of ops of ``kind`` (1 when not calibrated)."""
        for k, v in self.kernel_scale:
            if k == kind:
                return v
        return 1.0

    @property
    def peak_gflops(self) -> float:
        """Nominal FP32 peak (2 FLOPs per FMA lane and cycle), GFLOP/s."""
        return 2.0 * self.pes * self.lanes * self.clock_mhz * 1e-3

    def with_(self, **changes: Any) -> "HardwareProfile":
        """A copy with some figures changed (e.g. ``with_(pes=160)``); efficiency fields go by name too."""
        eff = {k: changes.pop(k) for k in list(changes) if k in {f.name for f in fields(Efficiency)}}
        out = replace(self, **changes)
        return replace(out, efficiency=replace(out.efficiency, **eff)) if eff else out

    def target_str(self) -> str:
        t = self.target
        if isinstance(t, dict):
            return "{" + ", ".join(f"{k}: {v}" for k, v in t.items()) + "}"
        return str(t)


def _num(raw: Mapping[str, Any], key: str, where: str, *, integer: bool = False, lo: float = 0.0,
         hi: float | None = None, default: Any = None) -> Any:
    value = raw.get(key, default)
    if value is None:
        raise LasnetError(f"{where}: missing field '{key}'")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        kind = "an integer" if integer else "a number"
        raise LasnetError(f"{where}: field '{key}' must be {kind}, got {value!r}")
    if value <= lo or (hi is not None and value > hi):
        rng = f"in ({lo:g}, {hi:g}]" if hi is not None else f"> {lo:g}"
        raise LasnetError(f"{where}: field '{key}' must be {rng}, got {value!r}")
    return int(value) if integer else float(value)


def profile_from_dict(raw: Any, name: str, source: str = "<dict>") -> HardwareProfile:
    """Validate a parsed YAML mapping and build a :class:`HardwareProfile`.

    Raises
    ------
    LasnetError
        Naming ``source`` and the offending field.
    """
    if not isinstance(raw, dict):
        raise LasnetError(f"{source}: expected a mapping of fields, got {type(raw).__name__}")
    kind = raw.get("kind")
    if kind is None:
        raise LasnetError(f"{source}: missing field 'kind'")
    if kind not in KINDS:
        raise LasnetError(f"{source}: field 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    target = raw.get("target")
    if target is None:
        raise LasnetError(f"{source}: missing field 'target'")
    if isinstance(target, dict):
        if not isinstance(target.get("kind"), str):
            raise LasnetError(f"{source}: field 'target' must have a 'kind' (e.g. cuda, llvm)")
    elif not isinstance(target, str) or not target:
        raise LasnetError(f"{source}: field 'target' must be a TVM tag string or a mapping, got {target!r}")
    dram = _num(raw, "dram_gbps", source)
    clock = _num(raw, "clock_mhz", source)
    eff_raw = raw.get("efficiency", {}) or {}
    if not isinstance(eff_raw, dict):
        raise LasnetError(f"{source}: field 'efficiency' must be a mapping")
    unknown = set(eff_raw) - {f.name for f in fields(Efficiency)}
    if unknown:
        raise LasnetError(f"{source}: unknown field 'efficiency.{sorted(unknown)[0]}'")
    d = EFFICIENCY_DEFAULTS[kind]
    ew = f"{source}: efficiency"
    eff = Efficiency(
        compute=_num(eff_raw, "compute", ew, hi=1.0, default=d["compute"]),
        dram=_num(eff_raw, "dram", ew, hi=1.0, default=d["dram"]),
        onchip=_num(eff_raw, "onchip", ew, hi=1.0, default=d["onchip"]),
        dram_half_bytes=_num(eff_raw, "dram_half_bytes", ew, lo=-1e-12, default=d["dram_half_bytes"]),
        onchip_half_bytes=_num(eff_raw, "onchip_half_bytes", ew, lo=-1e-12, default=d["onchip_half_bytes"]),
        launch_us=_num(eff_raw, "launch_us", ew, lo=-1e-12, default=d["launch_us"]),
        call_us=_num(eff_raw, "call_us", ew, lo=-1e-12, default=d["call_us"]),
    )
    scale_raw = raw.get("kernel_scale", {}) or {}
    if not isinstance(scale_raw, dict):
        raise LasnetError(f"{source}: field 'kernel_scale' must be a mapping of op kind to factor")
    kernel_scale = tuple(sorted((str(k), _num(scale_raw, k, f"{source}: kernel_scale")) for k in scale_raw))
    schedule = raw.get("schedule", "search")
    if schedule not in SCHEDULES:
        raise LasnetError(f"{source}: field 'schedule' must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    calibration = raw.get("calibration")
    if calibration is not None and not isinstance(calibration, dict):
        raise LasnetError(f"{source}: field 'calibration' must be a mapping")
    return HardwareProfile(
        name=str(raw.get("name", name)),
        kind=kind,
        pes=_num(raw, "pes", source, integer=True),
        lanes=_num(raw, "lanes", source, integer=True),
        clock_mhz=clock,
        dram_gbps=dram,
        onchip_gbps=_num(raw, "onchip_gbps", source, default=4.0 * dram),
        pe_bytes_per_cycle=_num(raw, "pe_bytes_per_cycle", source, default=64),
        l2_kb=_num(raw, "l2_kb", source),
        local_kb=_num(raw, "local_kb", source),
        target=target,
        efficiency=eff,
        description=str(raw.get("description", "")),
        source=source,
        schedule=schedule,
        kernel_scale=kernel_scale,
        calibration=calibration,
    )


def profile_to_dict(hw: HardwareProfile) -> dict[str, Any]:
    """The YAML mapping of a profile (inverse of :func:`profile_from_dict`)."""
    out: dict[str, Any] = {
        "name": hw.name, "description": hw.description, "kind": hw.kind, "target": hw.target, "pes": hw.pes,
        "lanes": hw.lanes, "clock_mhz": hw.clock_mhz, "dram_gbps": hw.dram_gbps, "onchip_gbps": hw.onchip_gbps,
        "pe_bytes_per_cycle": hw.pe_bytes_per_cycle, "l2_kb": hw.l2_kb, "local_kb": hw.local_kb,
        "efficiency": {f.name: float(getattr(hw.efficiency, f.name)) for f in fields(Efficiency)},
    }
    if hw.schedule != "search":
        out["schedule"] = hw.schedule
    if hw.kernel_scale:
        out["kernel_scale"] = {k: float(v) for k, v in hw.kernel_scale}
    if hw.calibration is not None:
        out["calibration"] = hw.calibration
    return out


def load_profile(path: str | os.PathLike) -> HardwareProfile:
    """Load and validate one YAML profile file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise LasnetError(f"{path}: cannot read profile ({e.strerror or e})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise LasnetError(f"{path}: malformed YAML{at}") from None
    return profile_from_dict(raw, path.stem, str(path))


def shipped_profiles() -> dict[str, Path]:
    """Name -> path of every profile shipped in ``hw_profiles/``."""
    return {p.stem: p for p in sorted(hw_profiles_dir().glob("*.yaml"))}


PROFILES_ENV = "LASNET_TVM_PROFILES"


def user_profiles_dir(env: Mapping[str, str] | None = None) -> Path:
    """The user's profile folder: ``$LASNET_TVM_PROFILES``, else ``~/.lasnet-tvm/hw_profiles``."""
    env = os.environ if env is None else env
    return Path(env.get(PROFILES_ENV) or Path.home() / ".lasnet-tvm" / "hw_profiles")


def user_profiles(env: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Name -> path of every profile in :func:`user_profiles_dir` (searched after the shipped ones)."""
    folder = user_profiles_dir(env)
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def all_profiles() -> dict[str, tuple[Path, str]]:
    """Name -> (path, ``"shipped"`` or ``"user"``); a shipped profile wins over a user one of its name."""
    out = {name: (p, "user") for name, p in user_profiles().items()}
    out.update({name: (p, "shipped") for name, p in shipped_profiles().items()})
    return dict(sorted(out.items()))


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """User cache folder: ``$XDG_CACHE_HOME/lasnet-tvm`` or ``~/.cache/lasnet-tvm``."""
    env = os.environ if env is None else env
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lasnet-tvm"


def local_profile_path(env: Mapping[str, str] | None = None) -> Path:
    """Where the measured profile of this machine (``--device local``) is cached."""
    return cache_dir(env) / "local.yaml"


def known_devices() -> list[str]:
    return sorted(set(all_profiles()) - {"local"}) + ["local"]


def get_profile(device: str, *, measure_local: bool = True) -> HardwareProfile:
    """Profile of a device name (shipped file stem) or ``local``.

    Names are looked up in the shipped ``hw_profiles/``, then in the user's folder (:func:`user_profiles_dir`,
    where ``profile-device`` writes ``local.yaml``). ``local`` found in neither comes from the user cache
    (:func:`local_profile_path`); if that does not exist either and ``measure_local`` it measures this machine
    and caches the result.
    """
    known = all_profiles()
    if device in known:
        return load_profile(known[device][0])
    if device == "local":
        cached = local_profile_path()
        if not cached.exists():
            if not measure_local:
                raise LasnetError(f"no profile of this machine at {cached}; run 'lasnet-tvm profile-device'")
            write_local_profile(cached)
        return load_profile(cached)
    raise LasnetError(f"unknown device {device!r}; known devices: {', '.join(known_devices())}")


def write_local_profile(path: str | os.PathLike) -> Path:
    """Measure this machine (:func:`.measure.measure_local`) and write its profile to ``path`` (folders created).
    Warns (:class:`UserWarning`) when the machine was busy: other work slows the measurement, and every choice made
    from the profile (``--masker auto``, ``--granularity auto``, ``tune``'s priorities) would inherit the error."""
    import warnings

    from .measure import measure_local

    prof = measure_local()
    measured = prof.pop("measured")
    profile_from_dict(prof, "local", str(path))  # validate before writing
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# Measured by lasnet-tvm profile-device: conv1x1 {measured['peak_gflops']} GFLOP/s "
              f"(nominal {measured['nominal_gflops']}), copy {measured['copy_gbps']} GB/s, TVM on "
              f"{measured['threads']} threads, load average {measured['load_average']} on {measured['cpus']} CPUs.\n")
    path.write_text(header + yaml.safe_dump(prof, sort_keys=False))
    if measured["load_average"] > 0.5 * measured["cpus"]:
        warnings.warn(f"the profile of this machine in {path} was measured while it was busy (load average "
                      f"{measured['load_average']} on {measured['cpus']} CPUs) and may understate it; measure again "
                      f"on a quiet machine: lasnet-tvm profile-device -o {path}", stacklevel=2)
    return path


def resolve_profile(device: str, profile: str | os.PathLike | None = None) -> HardwareProfile:
    """The profile a command uses: the YAML file ``profile`` when given (``--profile``), else ``device``'s."""
    return load_profile(profile) if profile else get_profile(device)
