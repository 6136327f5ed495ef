"""CUDA code that runs on the device alone (no GPU needed): every kernel's loops, the mask compaction included,
are bound to GPU threads, so the host function only launches kernels; the compaction against PyTorch."""

from __future__ import annotations

import pytest
import torch
import tvm
from tvm.script import tirx as T

from _cuda import host_buffer_accesses
from test_targets import SHAPES
from lasnet_tvm import kernels as K
from lasnet_tvm.kernels._compact import chunking, compaction
from lasnet_tvm.targets import resolve_target

CUDA = resolve_target("cuda -arch=sm_90")


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_host_code_touches_no_device_buffer(name):
    """Lowered for CUDA, no kernel leaves a loop on the host that reads or writes a (device) buffer."""
    accessed, kernels = host_buffer_accesses(K.scheduled(name, CUDA, **SHAPES[name]).mod, CUDA)
    assert kernels == 1 and not accessed, f"{name}: the host accesses {sorted(accessed)}"


def test_host_check_sees_a_host_loop():
    """The check above fails on a kernel whose compaction-like loop is left unbound."""

    @T.prim_func(s_tir=True)
    def serial(mask: T.Buffer((8,), "int32"), count: T.Buffer((1,), "int32")):
        with T.sblock("count"):
            count[0] = 0
            for p in range(8):
                count[0] = count[0] + mask[p]

    assert host_buffer_accesses(tvm.IRModule({"main": serial}), CUDA)[0] == {"count", "mask"}


def _compactor(G: int):
    NT = chunking(G)[0]
    compact = compaction(G)

    @T.prim_func(s_tir=True)
    def main(mask: T.Buffer((G,), "int32"), idx: T.Buffer((G,), "int32"), count: T.Buffer((1,), "int32")):
        csum = T.sblock_alloc_buffer((NT,), "int32")
        compact(mask, idx, count, csum)

    return tvm.compile(main, target="llvm")["main"]


@pytest.mark.parametrize("G", [1, 2, 4, 49, 50, 196, 3136])
def test_compaction_against_torch(G):
    """Chunked compaction = ``nonzero`` of the mask, for empty, full and random masks of every chunking."""
    fn = _compactor(G)
    nt, kk = chunking(G)
    assert nt * kk >= G and (nt - 1) * kk < G
    gen = torch.Generator().manual_seed(G)
    for mask in (torch.zeros(G), torch.ones(G), torch.rand(G, generator=gen) < 0.3, torch.rand(G, generator=gen) < 0.8):
        mask = mask.to(torch.int32)
        idx, count = torch.full((G,), -7, dtype=torch.int32), torch.full((1,), -7, dtype=torch.int32)
        fn(mask, idx, count)
        ref = torch.nonzero(mask).flatten().to(torch.int32)
        assert int(count[0]) == ref.numel()
        assert torch.equal(idx[: ref.numel()], ref)


def _lowered(model, target, fusion="all", bounded=None):
    from lasnet_tvm.compiler.export import export_model
    from lasnet_tvm.compiler.importer import import_exported
    from lasnet_tvm.compiler.pipeline import apply_passes, lasnet_passes

    return apply_passes(import_exported(export_model(model)), lasnet_passes(target, fusion, bounded=bounded))


def _relax_calls(mod, target) -> set:
    """Names of the operators and runtime functions that ``main`` calls once Relax is lowered for ``target``."""
    from tvm import relax

    from lasnet_tvm.compiler.pipeline import relax_pipeline

    names = set()

    def visit(e):
        if isinstance(e, relax.ExternFunc):
            names.add(str(e.global_symbol))
        elif isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op):
            names.add(str(e.op.name))

    relax.analysis.post_order_visit(relax_pipeline(target)(mod)["main"], visit)
    return names


def test_cuda_main_never_reads_the_patch_count_on_the_host():
    """On CUDA the patch buffers are sized for all patches: ``main`` has no data-dependent shape and no
    device-to-host read of the count (capturable in a CUDA graph); the CPU form does read it (the check sees it)."""
    from tvm import relax

    from _compiler import small_model

    model = small_model(seed=2)
    cuda = _lowered(model, CUDA)
    assert not relax.analysis.defined_symbolic_vars(cuda["main"])
    calls = _relax_calls(cuda, CUDA)
    assert not {c for c in calls if "tensor_to_shape" in c}
    host_read = _lowered(model, CUDA, bounded=False)
    assert relax.analysis.defined_symbolic_vars(host_read["main"])
    assert "vm.builtin.tensor_to_shape" in _relax_calls(host_read, CUDA)
    accessed, kernels = host_buffer_accesses(cuda, CUDA)
    assert kernels == 1 and not accessed, sorted(accessed)


@pytest.mark.parametrize("fusion,bias", [("all", -20.0), ("all", 20.0), ("all", None), ("none", None)])
def test_bounded_model_matches_pytorch(fusion, bias):
    """The CUDA form (all-patch buffers, count on the device) built for this CPU computes PyTorch's logits and
    masks, at rate 0 (bias -20), rate 1 (bias 20) and the model's own random masks."""
    import numpy as np
    from tvm import relax

    from _compiler import random_input, reference, small_model
    from lasnet_tvm.compiler.pipeline import relax_pipeline

    model = small_model(seed=5, bias=bias)
    llvm = resolve_target("llvm")
    mod = _lowered(model, llvm, fusion, bounded=True)
    assert not relax.analysis.defined_symbolic_vars(mod["main"])
    run = relax.VirtualMachine(tvm.compile(mod, target=llvm, relax_pipeline=relax_pipeline(llvm)), tvm.cpu())["main"]
    for seed in (1, 2):
        x = random_input(seed)
        logits, counts, masks = (t.numpy() for t in run(tvm.runtime.tensor(x)))
        ref_logits, ref_masks = reference(model, x)
        np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-4 * np.abs(ref_logits).max())
        np.testing.assert_array_equal(counts, [m.sum() for m in ref_masks])
        np.testing.assert_array_equal(masks != 0, np.concatenate([m.reshape(-1) for m in ref_masks]))
        rate = counts.sum() / masks.size
        assert rate == {-20.0: 0.0, 20.0: 1.0}.get(bias, rate) and (bias is not None or 0.0 < rate < 1.0)


def _ptxas_report(func, tmp_path) -> dict:
    """``registers``, ``shared_bytes`` and ``spill_bytes`` of ``func``'s kernels (the largest of each) from ptxas
    (``nvcc -cubin -Xptxas -v`` for sm_90)."""
    import re
    import subprocess

    from lasnet_tvm.targets import cuda_source

    src = tmp_path / "k.cu"
    src.write_text(cuda_source(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), "sm_90"))
    res = subprocess.run(["nvcc", "-cubin", "-arch=sm_90", "-Xptxas", "-v", str(src), "-o", str(tmp_path / "k.cubin")],
                         capture_output=True, text=True, check=True)
    num = lambda pattern: max((int(v) for v in re.findall(pattern, res.stderr)), default=0)  # noqa: E731
    return {"registers": num(r"Used (\d+) registers"), "shared_bytes": num(r"(\d+) bytes smem"),
            "spill_bytes": num(r"(\d+) bytes spill (?:stores|loads)")}


@pytest.mark.skipif(__import__("shutil").which("nvcc") is None, reason="needs nvcc (ptxas)")
def test_static_convolution_stages_in_shared_memory(tmp_path):
    """The legalized static convolution (the stem, bias and ReLU fused) gets the tiled CUDA schedule: input
    windows and weights staged in shared memory, a register tile per thread, nothing spilled."""
    from _compiler import small_model
    from lasnet_tvm.compiler.passes import unscheduled
    from lasnet_tvm.compiler.passes.schedule_static_ops import default_static_schedule
    from lasnet_tvm.compiler.pipeline import apply_passes, lasnet_passes
    from lasnet_tvm.compiler.export import export_model
    from lasnet_tvm.compiler.importer import import_exported

    mod = apply_passes(import_exported(export_model(small_model(seed=2))), lasnet_passes(CUDA, "all")[:-1])
    convs = [f for gv, f in mod.functions_items() if unscheduled(f) and "conv2d" in gv.name_hint]
    assert convs, "no static convolution left to schedule"
    for func in convs:
        scheduled = default_static_schedule(func, CUDA)
        assert '"local"' in scheduled.script()  # the register tile
        report = _ptxas_report(scheduled, tmp_path)
        assert report["shared_bytes"] > 0 and report["spill_bytes"] == 0, report


@pytest.mark.parametrize("name,fusion", [("s4", "all"), ("s4", "none"), ("s2_stride2_groups_se", "all"),
                                         ("s2_stride2_groups_se", "masker+gather"), ("s7", "all"), ("s1", "masker")])
def test_bounded_block_matches_references(name, fusion):
    """A compiled block in the CUDA form (kernels over all patches, count read on the device) built for this CPU
    computes the sparse PyTorch block at rates 0, 1, 0.4 and its own masks, and never slices its buffers."""
    from _blocks import random_block, set_rate, untie
    from test_block_runtime import BLOCKS, close
    from lasnet_tvm.block_runtime import CompiledBlock
    from lasnet_tvm.models.folded import sparse_block

    fb = random_block(**BLOCKS[name], seed=len(name))
    blk = None
    for rate in (0.0, 1.0, 0.4, "natural"):
        x = torch.randn(fb.spec.c_in, fb.spec.in_size, fb.spec.in_size)
        if rate == "natural":
            fb = random_block(**BLOCKS[name], seed=len(name))
            untie(fb, x)
            blk = CompiledBlock.build(fb, "llvm", fusion=fusion, bounded=True)
        else:
            set_rate(fb, x, rate, seed=int(rate * 10))
            blk = blk or CompiledBlock.build(fb, "llvm", fusion=fusion, bounded=True)
        assert blk.bounded
        blk.active_count = None  # the bounded form never asks the host for the count
        ref, ref_mask = sparse_block(fb, x[None])
        out, mask = blk(x)
        assert torch.equal(mask, ref_mask[0])
        close(out, ref[0])
