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
