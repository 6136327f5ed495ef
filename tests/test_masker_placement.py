"""Masker placement per block (fused into conv1, or separate: the masker first, conv1 on the active patches'
windows only): plans, compiled blocks and models against PyTorch, the predictor's model of both placements,
``compile --masker`` and the manifest's ``masker_choice``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from _blocks import random_block, set_rate
from _compiler import reference, small_model
from lasnet_tvm.block_plan import Fusion, MaskerPlacement, block_plan
from lasnet_tvm.block_runtime import CompiledBlock
from lasnet_tvm.checkpoint import save_checkpoint
from lasnet_tvm.cli.main import cli
from lasnet_tvm.compiler import CompiledModel, compile_model
from lasnet_tvm.errors import LasnetError
from lasnet_tvm.models.folded import dense_masked_block, sparse_block
from lasnet_tvm.predictor.kernel_ops import predict_step
from lasnet_tvm.predictor.network import active_patches, predict_block
from lasnet_tvm.predictor.search import choose_masker
from lasnet_tvm.targets import resolve_target
from test_predictor_kernels import CPU, GPU, use_fixed_local_profile

LLVM = resolve_target("llvm")


def close(a, b):
    scale = max(1.0, float(b.abs().max()))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * scale)


def test_plans():
    fb = random_block(c_in=16, c_mid=8, c_out=32, size=14, stride=2, S=2, se=4)
    s = fb.spec
    assert block_plan(s) == block_plan(s, masker="fused") == block_plan(s, "all", False, False, MaskerPlacement.FUSED)
    for inplace in (False, True):
        fused = block_plan(s, inplace_residual=inplace)
        sep = block_plan(s, inplace_residual=inplace, masker="separate")
        assert [st.kernel for st in sep[:3]] == ["conv1x1", "masker", "gather_conv1x1"]
        assert [st.kernel for st in fused[:2]] == ["conv1x1", "masker_conv1x1"]
        assert sep[3:] == fused[2:]  # gather-conv3x3, SE, conv3, scatter-add: the same steps
    # conv1 of the active windows into the map gather-conv3x3 reads (no border zeroing: only windows are read)
    assert sep[2].outputs == ((fused[1].outputs[0]),) and sep[2].inputs == ("x", "idx", "w1p", "b1")
    assert not sep[2].zeroed
    assert block_plan(s, static=True, masker="separate") == block_plan(s, static=True)
    for fusion in ("none", "masker", "masker+gather"):
        with pytest.raises(LasnetError, match="separate needs fusion all"):
            block_plan(s, fusion, masker="separate")
    with pytest.raises(LasnetError, match="unknown masker placement 'dense'"):
        block_plan(s, masker="dense")


BLOCKS = {  # ResNet-like (downsample, identity), stride 2, RegNetY-like (groups, SE), S = 1 / 2 / 4
    "s4": dict(c_in=16, c_mid=8, c_out=16, size=13, S=4),
    "s1_downsample": dict(c_in=8, c_mid=8, c_out=16, size=7, S=1),
    "s2_stride2_groups_se": dict(c_in=8, c_mid=16, c_out=16, size=14, stride=2, S=2, groups=4, se=4),
    "s4_stride2": dict(c_in=16, c_mid=8, c_out=32, size=17, stride=2, S=4),
}


@pytest.mark.parametrize("name", list(BLOCKS))
def test_separate_block_matches_references(name):
    fb = random_block(**BLOCKS[name], seed=len(name))
    blk = None
    for rate in (0.0, 1.0, 0.3):
        x = torch.randn(fb.spec.c_in, fb.spec.in_size, fb.spec.in_size)
        want = set_rate(fb, x, rate, seed=int(rate * 10))
        blk = blk or CompiledBlock.build(fb, "llvm", masker="separate")
        out, mask = blk(x)
        assert torch.equal(mask, want)
        ref, _ = sparse_block(fb, x[None])
        close(out, ref[0])
        close(out, dense_masked_block(fb, x[None], want[None])[0])


@pytest.mark.parametrize("arch,gran", [("las_resnet50", "4-4-2-1"),
                                       pytest.param("las_regnety_800mf", "2-4-2-1", marks=pytest.mark.slow)])
def test_compiled_model_with_mixed_placements(arch, gran):
    """Every other block separate (stride-2 and identity blocks of both kinds; RegNetY: groups and SE)."""
    model = small_model(arch, gran, seed=3)
    masker = ["separate" if i % 2 else "fused" for i in range(len(model.spec.blocks))]
    x = np.random.default_rng(4).standard_normal((2, 3, 64, 64)).astype(np.float32)
    ref_logits, ref_masks = reference(model, x)
    r = compile_model(model, LLVM, masker=masker)
    assert r.manifest["masker"] == masker
    got = CompiledModel.from_executable(r.executable, r.manifest).run(x)
    np.testing.assert_allclose(got.logits, ref_logits, rtol=1e-4, atol=1e-4 * np.abs(ref_logits).max())
    for block, m in zip(model.blocks, ref_masks):
        np.testing.assert_array_equal(got.masks[block.spec.name], m)
    assert 0.0 < got.rates.mean() < 1.0


@pytest.mark.slow  # (rate 0, separate in some blocks: test_cli_masker)
@pytest.mark.parametrize("bias,rate", [(-1.0, 0.0), (1.0, 1.0)])
def test_separate_model_at_rate_zero_and_one(bias, rate):
    model = small_model(bias=bias, seed=5)
    r = compile_model(model, LLVM, masker="separate")
    x = np.random.default_rng(6).standard_normal((1, 3, 64, 64)).astype(np.float32)
    got = CompiledModel.from_executable(r.executable, r.manifest).run(x)
    ref_logits, _ = reference(model, x)
    np.testing.assert_allclose(got.logits, ref_logits, rtol=1e-4, atol=1e-4 * np.abs(ref_logits).max())
    assert np.all(got.rates == rate)


def test_compile_model_rejects_bad_placements():
    model = small_model()
    with pytest.raises(LasnetError, match="separate needs fusion all, not none"):
        compile_model(model, LLVM, fusion="none", masker="separate")
    with pytest.raises(LasnetError, match="expected 1 masker placement or 16"):
        compile_model(model, LLVM, masker=["fused", "separate"])


@pytest.mark.parametrize("hw", [CPU, GPU])
def test_predictor_prices_the_plan_of_each_placement(hw):
    """predict_block with a placement is the sum of its plan's kernels, priced one by one; the separate
    placement's conv1 scales with the active patches, the fused one's does not."""
    from lasnet_tvm.archs import arch_spec

    for b in arch_spec("las_regnety_800mf", "4-4-2-1").blocks[:6]:
        for masker in MaskerPlacement:
            for rate in (0.0, 0.3, 1.0):
                P = active_patches(b, rate)
                want = sum(predict_step(st, P, hw) for st in block_plan(b, masker=masker))
                assert predict_block(b, hw, rate, masker=masker).dynamic_s == pytest.approx(want, rel=1e-9)
    b = arch_spec("las_resnet50", "4-4-2-1").blocks[1]
    sep = [predict_block(b, hw, r, masker="separate").dynamic_s for r in (0.1, 0.5, 1.0)]
    fused = [predict_block(b, hw, r).dynamic_s for r in (0.1, 0.5, 1.0)]
    assert sep[0] < sep[1] < sep[2] and sep[2] > fused[2]  # halos recomputed: dearer with every patch active
    with pytest.raises(LasnetError, match="separate needs fusion all"):
        predict_block(b, hw, 0.5, "masker", masker="separate")


def test_choose_masker_note():
    from lasnet_tvm.archs import arch_spec

    spec = arch_spec("las_resnet50", "4-4-2-1")
    chosen, note = choose_masker(spec, CPU, 0.1)
    assert note["rate"] == 0.1 and note["profile"] == CPU.name and len(note["blocks"]) == len(spec.blocks)
    for b, m, row in zip(spec.blocks, chosen, note["blocks"]):
        ms = {p: predict_block(b, CPU, 0.1, masker=p).dynamic_s * 1e3 for p in MaskerPlacement}
        assert row["predicted_ms"] == {p.value: round(v, 4) for p, v in ms.items()}
        assert row["chosen"] == m.value == min(ms, key=ms.get).value and row["block"] == b.name
    assert note["chosen"] == [m.value for m in chosen]
    chosen, note = choose_masker(spec, CPU, 0.1, fusion="none")  # no separate placement without fusion all
    assert set(note["chosen"]) == {"fused"} and all(list(r["predicted_ms"]) == ["fused"] for r in note["blocks"])


def test_granularity_search_prices_each_block_at_its_placement():
    """``--granularity auto --masker auto`` chooses S and placement together: each block of each candidate S is
    priced at its cheaper placement; a fixed placement prices every block at it."""
    from dataclasses import replace

    from lasnet_tvm.archs import arch_spec
    from lasnet_tvm.predictor.search import granularity_manifest, search_spec

    base = arch_spec("las_resnet50", 1)
    by = {m: search_spec(base, CPU, 0.1, masker=m) for m in ("fused", "separate", "auto")}
    assert by["fused"] == search_spec(base, CPU, 0.1)  # the default prices the fused placement
    for stage, scores in enumerate(by["auto"].scores, start=1):
        for S, v in scores.items():
            blocks = [replace(b, S=S) for b in base.blocks if b.stage == stage]
            want = sum(min(predict_block(b, CPU, 0.1, masker=m).dynamic_s for m in MaskerPlacement) for b in blocks)
            assert v == pytest.approx(want, rel=1e-12)
            assert v <= min(by["fused"].scores[stage - 1][S], by["separate"].scores[stage - 1][S]) * (1 + 1e-12)
    assert any(by["auto"].scores[i] != by["fused"].scores[i] for i in range(3))  # separate pays at r = 0.1
    assert search_spec(base, CPU, 0.1, fusion="none", masker="auto") == search_spec(base, CPU, 0.1, fusion="none")
    assert granularity_manifest(by["auto"], CPU, 0.1, 0.05, "auto")["masker"] == "auto"


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_predict_prices_the_masker_placement(tmp_path):
    """``predict --masker``: every block at that placement, or with ``auto`` at the one ``compile --masker auto``
    chooses (:func:`choose_masker`), the network total the sum of those blocks; separate needs fusion all."""
    from lasnet_tvm.archs import arch_spec

    spec = arch_spec("las_resnet50", "4-4-2-1")
    chosen, note = choose_masker(spec, CPU, 0.1)
    assert len(set(chosen)) == 2  # both placements win somewhere at r = 0.1: the test tells them apart
    import yaml

    from lasnet_tvm.predictor.profiles import profile_to_dict

    prof = tmp_path / "cpu.yaml"
    prof.write_text(yaml.safe_dump(profile_to_dict(CPU)))
    out = {m: json.loads(_invoke("predict", "--profile", prof, "--arch", "las_resnet50", "--rate", "0.1",
                                 "--masker", m, "--json").output) for m in ("fused", "separate", "auto")}
    assert [b["masker"] for b in out["auto"]["blocks"]] == note["chosen"]
    for m in ("fused", "separate"):
        assert {b["masker"] for b in out[m]["blocks"]} == {m}
    for i, b in enumerate(out["auto"]["blocks"]):
        assert b["dynamic_ms"] == out[b["masker"]]["blocks"][i]["dynamic_ms"]
        options = [out[m]["blocks"][i]["dynamic_ms"] for m in ("fused", "separate")]
        assert b["dynamic_ms"] == min(options)
    assert out["auto"]["dynamic_ms"] < min(out["fused"]["dynamic_ms"], out["separate"]["dynamic_ms"])
    assert out["auto"]["static_ms"] == out["fused"]["static_ms"] and out["auto"]["masker"] == "auto"
    r = _invoke("predict", "--masker", "separate", "--fusion", "masker")
    assert r.exit_code != 0
    assert r.output.strip().splitlines()[-1] == "Error: --masker separate needs --fusion all, not masker"


def test_cli_masker(tmp_path, monkeypatch):
    use_fixed_local_profile(tmp_path, monkeypatch)
    model = small_model(seed=9, width=0.125, bias=-1.0)  # no active patch: P = 0 in every block
    pt = save_checkpoint(tmp_path / "model.pt", model)
    so = tmp_path / "m.so"
    res = _invoke("compile", pt, "-o", so, "--masker", "sideways")
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and "sideways" in res.output
    res = _invoke("compile", pt, "-o", so, "--masker", "separate", "--fusion", "none")
    assert res.exit_code != 0 and "separate needs fusion all" in res.output and "Traceback" not in res.output
    assert not so.exists()
    res = _invoke("compile", pt, "-o", so, "--masker", "auto", "--rate", "0.1")
    assert res.exit_code == 0, res.output
    m = json.loads(so.with_suffix(".json").read_text())
    from lasnet_tvm.predictor.profiles import get_profile

    chosen, note = choose_masker(model.spec, get_profile("local"), 0.1)
    assert m["masker_choice"] == note and m["masker"] == [c.value for c in chosen]
    assert {"fused", "separate"} <= set(m["masker"])  # this profile prices stage 4 separate at 64 px
    assert "masker placement chosen by the predictor" in res.output
    res = _invoke("verify", pt, so, "--samples", 2)
    assert res.exit_code == 0 and res.output.startswith("OK"), res.output
    assert CompiledModel.load(so).run(np.zeros((1, 3, 64, 64), np.float32)).rates.max() == 0.0


@pytest.mark.slow
@pytest.mark.skipif(not all(shutil.which(t) for t in ("nvcc", "ptxas", "fatbinary")),
                    reason="CUDA toolkit (nvcc, ptxas, fatbinary) not installed")
def test_separate_cuda_kernels_are_tiled(tmp_path):
    """A whole model on CUDA (the kernel alone: tests/test_kernel_gather_conv1x1.py): gather_conv1x1 stages its
    tiles in shared memory, keeps a register tile per thread and spills nothing."""
    from lasnet_tvm.compiler import build_target
    from lasnet_tvm.compiler.artifact import save_artifact

    r = compile_model(small_model(seed=11, width=0.125), build_target("cuda -arch=sm_90"), masker="separate")
    save_artifact(r.executable, tmp_path / "m.so", r.manifest)
    res = _invoke("inspect", tmp_path / "m.so", "--json")
    assert res.exit_code == 0, res.output
    kernels = [k for k in json.loads(res.output)["kernels"] if k["name"].startswith("gather_conv1x1")]
    assert kernels and all(k["conv"] for k in kernels)
    bad = [k["name"] for k in kernels
           if not (k["shared_bytes"] > 0 and k["outputs_per_thread"] > 1 and k["spills"] == 0)]
    assert not bad, bad


def test_bench_block_times_both_placements(tmp_path):
    """bench block --masker fused,separate checks the separate block against PyTorch and times it at each rate."""
    out = tmp_path / "b.json"
    res = _invoke("bench", "block", "--channels", "16,8,16", "--size", "9", "--S", "2", "--repeats", "2",
                  "--rates", "0,0.5", "--masker", "fused,separate", "--out", out)
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert all(r["separate_ms"] > 0 and r["fused_ms"] > 0 for r in data["rates"])
    assert data["max_rel_err"]["separate@0.5"] < 1e-4 and "separate masker" in res.output
    res = _invoke("bench", "block", "--channels", "16,8,16", "--size", "9", "--masker", "fused,upside")
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1 and "'upside'" in res.output
