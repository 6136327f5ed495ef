"""Shared by the benchmark tests: the four backbones' measured blocks at a small size, and one cache of compiled
kernels for every benchmark test module (the benchmarks compile the same kernels many times over)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lasnet_tvm.archs import BlockSpec

BACKBONES = ("las_resnet50", "las_resnet101", "las_regnety_400mf", "las_regnety_800mf")
INPUT_SIZE, WIDTH = 64, 0.125  # stage outputs 16, 8, 4, 2: every stage in seconds
STAGES = (1, 2, 3, 4)
CASES = [(arch, stage) for arch in BACKBONES for stage in STAGES]

_KERNELS: dict = {}


def stage_block(arch: str, stage: int) -> BlockSpec:
    """What the block benchmarks measure of ``arch``'s stage (its first identity block, else its first block),
    at granularity S = 2 where the block's output allows (patches clipped at the image edge included)."""
    from lasnet_tvm.benchmarks.block import select_blocks

    (b,) = select_blocks(arch, (stage,), None, INPUT_SIZE, WIDTH)
    return replace(b, S=min(2, b.out_size))


@pytest.fixture(scope="module", autouse=True)
def shared_kernels():
    """Compile each distinct kernel once per test session (benchmarks, fusion variants and backbones share them)."""
    from lasnet_tvm import block_runtime

    compile_module = block_runtime.compile_kernel_module

    def cached(name, target, count_after=None, **params):
        key = (name, str(target), count_after, tuple(sorted(params.items())))
        if key not in _KERNELS:
            _KERNELS[key] = compile_module(name, target, count_after, **params)
        return _KERNELS[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(block_runtime, "compile_kernel_module", cached)
        yield
