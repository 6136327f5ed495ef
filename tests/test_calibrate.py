"""Calibration: the fit recovers known parameters, the CLI writes a loadable profile, bad inputs fail in one line."""

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from lasnet_tvm.cli.main import cli
from lasnet_tvm.predictor import calibrate as C
from lasnet_tvm.predictor.kernel_ops import PATCH_KERNELS
from lasnet_tvm.predictor.profiles import load_profile, profile_from_dict, profile_to_dict

CPU = {"name": "testcpu", "kind": "cpu", "target": "llvm", "pes": 2, "lanes": 16, "clock_mhz": 2400,
       "dram_gbps": 10.0, "onchip_gbps": 40.0, "pe_bytes_per_cycle": 64, "l2_kb": 32768, "local_kb": 512}


def synthetic_points(truth, heldout_stage=2, noise=0.02, seed=0, archs=("las_resnet50",), rates=(0.25, 0.75)):
    """Points of the full case list of ``archs`` whose 'measurements' are the model's own predictions on ``truth``."""
    pts = []
    for case in C.default_cases(archs, heldout_stage=heldout_stage):
        from lasnet_tvm.block_plan import block_plan

        s = case.spec
        for v in ("static", "all", "none"):
            for rate in rates:
                P = round(rate * s.num_patches)
                for st in block_plan(s, "all" if v == "static" else v, v == "static"):
                    p = P if v != "static" and st.kernel in PATCH_KERNELS else None
                    pts.append(C.Point(case.label, case.heldout, v, rate, st.kernel, st.params, p, st.outputs[0][0],
                                       arch=case.arch))
    uniq = {(p.kernel, json.dumps(p.params, sort_keys=True), p.P): p for p in pts}
    pts = list(uniq.values())
    rng = np.random.default_rng(seed)
    for p, t in zip(pts, C.predict_ms(pts, truth)):
        p.samples_ms = [float(t * np.exp(rng.normal(0, noise)))]
    return pts


def test_fit_recovers_known_efficiency():
    source = profile_from_dict(dict(CPU, schedule="default"), "testcpu")  # CPU defaults: 0.7, 0.7, 0.8, 60, 60, 5
    truth = source.with_(compute=0.3, dram=0.45, onchip=0.25, dram_half_bytes=150.0, onchip_half_bytes=20.0,
                         launch_us=12.0)
    pts = synthetic_points(truth)
    fit = [p for p in pts if not p.heldout]
    assert len(fit) > 60 and any(p.heldout for p in pts)
    got = C.fit_efficiency(fit, source, starts=1)
    e, t = got.efficiency, truth.efficiency
    for k in ("compute", "onchip", "launch_us"):
        assert getattr(e, k) == pytest.approx(getattr(t, k), rel=0.1), k
    # the held-out shapes are predicted as well as the noise allows; the source profile is far off
    held = [p for p in pts if p.heldout]
    meas = [p.measured_ms for p in held]
    assert C.accuracy(meas, C.predict_ms(held, got))["mape"] < 0.04
    assert C.accuracy(meas, C.predict_ms(held, source))["mape"] > 0.3


def test_kernel_scale_recovers_a_slow_kernel():
    source = profile_from_dict(dict(CPU, schedule="default"), "testcpu")
    truth = source.with_(kernel_scale=(("scatter", 3.0),))
    pts = synthetic_points(truth, noise=0.0)
    got = C.fit_kernel_scale([p for p in pts if not p.heldout], source)
    scale = dict(got.kernel_scale)
    assert scale["scatter"] == pytest.approx(3.0, rel=0.1)
    assert all(v == pytest.approx(1.0, abs=0.05) for k, v in scale.items() if k != "scatter")


def test_profile_accepts_calibration_and_kernel_scale():
    raw = dict(CPU, kernel_scale={"conv1x1": 1.5}, calibration={"date": "2026-11-01", "n_points": 3})
    hw = profile_from_dict(raw, "x")
    assert hw.kernel_scale_of("conv1x1") == 1.5 and hw.kernel_scale_of("gather") == 1.0
    again = profile_from_dict(profile_to_dict(hw), "x")
    assert again == hw and again.calibration == raw["calibration"]
    from lasnet_tvm.errors import LasnetError

    with pytest.raises(LasnetError, match="kernel_scale"):
        profile_from_dict(dict(CPU, kernel_scale={"conv1x1": -1}), "x")
    with pytest.raises(LasnetError, match="calibration"):
        profile_from_dict(dict(CPU, calibration=[1, 2]), "x")
    with pytest.raises(LasnetError, match="schedule"):
        profile_from_dict(dict(CPU, schedule="fast"), "x")


@pytest.mark.parametrize("kernel,params", [
    ("gather_conv3x3", dict(C=16, H=8, W=8, S=1, padded=True)), ("gather_conv3x3", dict(C=16, H=8, W=8, S=2, padded=True)),
    ("gather_conv3x3", dict(C=16, H=8, W=8, S=4, padded=True)), ("gather_conv3x3", dict(C=16, H=8, W=8, S=2)),
    ("patch_conv1x1", dict(C_in=16, C_out=32, S=1)), ("patch_conv1x1", dict(C_in=16, C_out=32, S=2)),
    ("patch_conv1x1", dict(C_in=16, C_out=32, S=4, Ho=16))])
@pytest.mark.parametrize("P", [1, 7, 12])
def test_predictor_counts_the_patches_the_kernel_computes(kernel, params, P):
    """The predictor prices the patch loop extent of the real kernel (P rounded up to whole patch blocks)."""
    from tvm import s_tir

    from lasnet_tvm import kernels
    from lasnet_tvm.predictor.kernel_ops import kernel_ops
    from lasnet_tvm.tuning.tasks import specialize

    sch = s_tir.Schedule(specialize(kernels.builder(kernel)(**params), P))
    computed = int(sch.get(sch.get_loops(sch.get_sblock("conv"))[0]).extent)
    assert computed >= P
    assert kernel_ops(kernel, params, P)[0].P == computed


def test_schedule_thresholds_match_kernels():
    from lasnet_tvm.predictor import kernel_ops as K

    # the computed patches are counted: 7 active S = 1 patches cost two blocks of 6 (12 patches)
    params = dict(C=64, H=14, W=14, S=1, padded=True)
    assert K.kernel_ops("gather_conv3x3", params, 7)[0].flops == K.kernel_ops("gather_conv3x3", params, 12)[0].flops
    assert K.kernel_ops("gather_conv3x3", params, 6)[0].flops < K.kernel_ops("gather_conv3x3", params, 7)[0].flops
    assert not K.one_patch_per_task("patch_conv1x1", dict(C_in=64, C_out=256))
    assert K.one_patch_per_task("window_conv3x3", dict(C=256))  # stage 3: 2.3 MiB of weights
    # conv3 with the in-place scatter-add in its epilogue costs both kernels' work, one call and one launch
    from dataclasses import replace

    fused = K.kernel_ops("patch_conv1x1", dict(C_in=64, C_out=256, S=4, Ho=56), 20)
    epilogue = K.kernel_ops("scatter_add", dict(C=256, Ho=56, Wo=56, S=4, inplace=True), 20)
    assert fused == (K.kernel_ops("patch_conv1x1", dict(C_in=64, C_out=256, S=4), 20)
                     + [replace(o, launches=(0.0, 0.0), calls=0) for o in epilogue])
    assert not K.one_patch_per_task("window_conv3x3", dict(C=512))  # stage 4: 9 MiB
    assert not K.one_patch_per_task("gather_conv3x3", dict(C=256, padded=True))  # patch blocks per channel tile
    assert K.one_patch_per_task("gather_conv3x3", dict(C=256, padded=False))  # per-patch window staging


def test_default_schedule_tiles_one_patch():
    from lasnet_tvm.predictor.kernel_ops import kernel_ops
    from lasnet_tvm.predictor.ops import op_latency

    search = profile_from_dict(CPU, "x")
    default = search.with_(schedule="default")
    (op,) = kernel_ops("gather_conv3x3", dict(C=256, H=14, W=14, S=2, stride=1), P=20)
    a, b = op_latency(op, search), op_latency(op, default)
    assert b.tile[0] == 1 and a.tile[0] > 1 and b.total > a.total


@pytest.fixture
def local_cache(tmp_path, monkeypatch):
    """A user cache holding a local profile (so that --device local does not measure the machine)."""
    cache = tmp_path / "cache"
    (cache / "lasnet-tvm").mkdir(parents=True)
    (cache / "lasnet-tvm" / "local.yaml").write_text(yaml.safe_dump(dict(CPU, name="local")))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


def test_quick_calibrate_cli(tmp_path, local_cache):
    out, rep = tmp_path / "cal.yaml", tmp_path / "cal.json"
    r = CliRunner().invoke(cli, ["calibrate", "--device", "local", "-o", str(out), "--quick", "--json", str(rep)])
    assert r.exit_code == 0, r.output
    hw = load_profile(out)
    cal = hw.calibration
    for k in ("date", "source_profile", "n_points", "n_fit", "n_heldout", "accuracy", "target", "heldout"):
        assert k in cal, k
    assert cal["source_profile"] == "local" and cal["n_fit"] > 0 and cal["n_heldout"] > 0
    assert set(cal["accuracy"]) == {"uncalibrated", "calibrated"}
    assert {"mape", "share_within", "spearman"} <= set(cal["accuracy"]["calibrated"]["heldout"])
    report = json.loads(rep.read_text())
    assert len(report["points"]) == cal["n_points"] and "per_kernel" in report["accuracy"]["calibrated"]["heldout"]
    assert "MAPE" in r.output and "overall" in r.output
    # predict takes the calibrated profile
    r = CliRunner().invoke(cli, ["predict", "--profile", str(out), "--arch", "las_resnet50", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["device"] == hw.name


def _one_line_error(args, match):
    r = CliRunner().invoke(cli, ["calibrate", *args])
    assert r.exit_code != 0
    lines = [l for l in r.output.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and match in lines[0], r.output


def test_bad_inputs_one_line(tmp_path, local_cache):
    out = tmp_path / "p.yaml"
    out.write_text("keep me")
    _one_line_error(["--device", "no-such-device", "-o", str(out)], "unknown device")
    import tvm

    if not tvm.cuda(0).exist:
        _one_line_error(["--device", "v100", "-o", str(out)], "no CUDA GPU")
    _one_line_error(["--device", "local", "-o", str(tmp_path / "missing" / "p.yaml")], "does not exist")
    _one_line_error(["--device", "local", "-o", str(tmp_path)], "is a directory")
    _one_line_error(["--device", "local", "-o", str(out), "--target", "cuda"], "profile")
    assert out.read_text() == "keep me"  # a failed run leaves an existing file alone


def test_fit_recovers_call_cost_from_zero_patch_points():
    """call_us is fitted only when kernels without active patches were measured."""
    source = profile_from_dict(dict(CPU, schedule="default"), "testcpu")
    truth = source.with_(launch_us=20.0, call_us=4.0, compute=0.4)
    with_zero = [p for p in synthetic_points(truth, noise=0.0, rates=(0.0, 0.5)) if not p.heldout]
    assert any(p.P == 0 for p in with_zero) and "call_us" in C.fitted_params(with_zero)
    got = C.fit_efficiency(with_zero, source, starts=1).efficiency
    assert got.call_us == pytest.approx(4.0, rel=0.05) and got.launch_us == pytest.approx(20.0, rel=0.05)
    without = [p for p in with_zero if p.P != 0]
    assert "call_us" not in C.fitted_params(without)
    assert C.fit_efficiency(without, source, starts=1).efficiency.call_us == source.efficiency.call_us


def test_leave_one_arch_out_and_spread():
    source = profile_from_dict(dict(CPU, schedule="default"), "testcpu")
    truth = source.with_(compute=0.3, onchip=0.3, launch_us=15.0)
    pts = synthetic_points(truth, noise=0.01, archs=("las_resnet50", "las_regnety_400mf"), rates=(0.5,))
    for i, p in enumerate(pts):  # two rounds 4 % apart: spread 0.04 / 1.02
        p.rounds = {0: [p.samples_ms[0] * 1.0], 1: [p.samples_ms[0] * 1.04]}
    assert C.repeat_spread(pts) == pytest.approx(0.04 / 1.02)
    cal = C.calibrate(pts, source, {"target": "llvm", "archs": ["las_resnet50", "las_regnety_400mf"],
                                    "heldout": "stage 2"}, kernel_scale="off")
    assert set(cal.loao) == {"las_resnet50", "las_regnety_400mf"}
    for arch, a in cal.loao.items():
        assert a["fitted_on"] == sorted({"las_resnet50", "las_regnety_400mf"} - {arch})
        assert a["overall"]["mape"] < 0.05  # the model is exact on its own predictions: only the noise is left
    section = cal.calibrated.calibration
    assert section["repeat_spread"] == pytest.approx(0.0392, abs=1e-4) and set(section["leave_one_arch_out"]) == set(cal.loao)


def test_calibrate_refuses_a_noisy_measurement(tmp_path, local_cache, monkeypatch):
    """A measurement whose rounds disagree by more than --max-spread writes nothing, in one line."""
    source = profile_from_dict(dict(CPU, schedule="default"), "testcpu")
    pts = [p for p in synthetic_points(source, noise=0.0) if not p.heldout][:20]
    pts += [p for p in synthetic_points(source, noise=0.0) if p.heldout][:5]
    for p in pts:
        p.rounds = {0: [1.0], 1: [1.5], 2: [1.2]}  # spread 0.5 / 1.2

    monkeypatch.setattr(C, "measure", lambda *a, **k: pts)
    out = tmp_path / "p.yaml"
    out.write_text("keep me")
    r = CliRunner().invoke(cli, ["calibrate", "--device", "local", "-o", str(out), "--max-spread", "0.2"])
    lines = r.output.strip().splitlines()
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert lines[-1].startswith("Error: repeat spread 41.7% exceeds --max-spread 20.0%"), r.output
    assert sum(l.startswith("Error") for l in lines) == 1
    assert out.read_text() == "keep me"
    r = CliRunner().invoke(cli, ["calibrate", "--device", "local", "-o", str(out), "--max-spread", "0.5",
                                 "--kernel-scale", "off"])
    assert r.exit_code == 0, r.output
    assert load_profile(out).calibration["repeat_spread"] == pytest.approx(0.5 / 1.2, abs=1e-4)
