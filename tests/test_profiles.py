"""Hardware profiles: every shipped file loads; validation errors name the file and the field."""

import os
import warnings

import pytest

from lasnet_tvm.errors import LasnetError
from lasnet_tvm.predictor.profiles import (get_profile, load_profile, local_profile_path, shipped_profiles,
                                           profile_from_dict)

PAPER = {"v100": (80, 64), "gtx1080": (20, 128), "tx2": (2, 128), "nano": (1, 128)}
GOOD = """
kind: gpu
target: {kind: cuda, arch: sm_70}
pes: 4
lanes: 32
clock_mhz: 1000
dram_gbps: 100
l2_kb: 512
local_kb: 64
"""


def test_shipped_profiles_load():
    names = set(shipped_profiles())
    assert {"v100", "gtx1080", "tx2", "nano", "xavier-nx", "orin", "a100", "h100", "rtx3090"} <= names
    assert any(load_profile(p).kind == "cpu" for p in shipped_profiles().values())
    for name, (pes, lanes) in PAPER.items():
        p = get_profile(name)
        assert (p.pes, p.lanes) == (pes, lanes)
        assert p.target


def test_tvm_targets_parse():
    tvm = pytest.importorskip("tvm")
    for path in shipped_profiles().values():
        p = load_profile(path)
        assert tvm.target.Target(p.target).kind.name in ("cuda", "llvm")


def test_defaults_filled(tmp_path):
    f = tmp_path / "dev.yaml"
    f.write_text(GOOD)
    p = load_profile(f)
    assert p.name == "dev" and p.onchip_gbps == 400 and p.efficiency.launch_us == 8


@pytest.mark.parametrize("edit, field", [
    (lambda t: t.replace("pes: 4\n", ""), "pes"),
    (lambda t: t.replace("lanes: 32", "lanes: many"), "lanes"),
    (lambda t: t.replace("kind: gpu", "kind: fpga"), "kind"),
    (lambda t: t.replace("dram_gbps: 100", "dram_gbps: -1"), "dram_gbps"),
    (lambda t: t.replace("target: {kind: cuda, arch: sm_70}", ""), "target"),
    (lambda t: t + "efficiency: {compute: 1.5}\n", "compute"),
    (lambda t: t + "efficiency: {speed: 2}\n", "efficiency.speed"),
])
def test_validation_names_file_and_field(tmp_path, edit, field):
    f = tmp_path / "broken.yaml"
    f.write_text(edit(GOOD))
    with pytest.raises(LasnetError) as e:
        load_profile(f)
    msg = str(e.value)
    assert str(f) in msg and f"'{field}'" in msg and "\n" not in msg


def test_malformed_yaml(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("kind: gpu\npes: [1, 2\n")
    with pytest.raises(LasnetError, match="bad.yaml: malformed YAML"):
        load_profile(f)
    with pytest.raises(LasnetError, match="expected a mapping"):
        profile_from_dict([1, 2], "x", "x.yaml")


def test_unknown_device_lists_known():
    with pytest.raises(LasnetError, match="unknown device 'k80'.*v100.*local"):
        get_profile("k80")


def test_local_profile_path():
    assert str(local_profile_path({"XDG_CACHE_HOME": "/c"})) == "/c/lasnet-tvm/local.yaml"
    assert local_profile_path({}).parts[-3:] == (".cache", "lasnet-tvm", "local.yaml")


def test_local_profile_counts_the_threads_tvm_runs_and_warns_when_busy(tmp_path, monkeypatch):
    """The measured profile's PEs are the threads TVM runs kernels with here (what the peak was measured with);
    a measurement on a busy machine writes the profile but warns, naming the command that measures it again."""
    from lasnet_tvm.predictor import measure
    from lasnet_tvm.predictor.profiles import write_local_profile

    monkeypatch.setattr(measure, "measure_peak_gflops", lambda: 50.0)  # the timing itself is profile-device's test
    monkeypatch.setattr(measure, "measure_dram_gbps", lambda: 10.0)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # quiet: no warning
        quiet = load_profile(write_local_profile(tmp_path / "quiet.yaml"))
    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    with pytest.warns(UserWarning, match=r"busy \(load average 64.0 on \d+ CPUs\).*profile-device -o "):
        path = write_local_profile(tmp_path / "busy.yaml")
    p = load_profile(path)
    assert p.pes == measure.tvm_threads() >= 1
    assert p.efficiency.compute == pytest.approx(min(1.0, 50.0 / (2e-3 * p.pes * p.lanes * p.clock_mhz)), abs=1e-4)
    assert f"TVM on {p.pes} threads, load average 64.0" in path.read_text().splitlines()[0]
    assert quiet.pes == p.pes and quiet.efficiency == p.efficiency
