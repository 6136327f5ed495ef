"""The kernel registry (lasnet_tvm.kernels) and its one dispatch point for default schedules."""

from __future__ import annotations

import pytest

from lasnet_tvm import kernels
from lasnet_tvm.errors import LasnetError


def test_kernel_registry():
    for name in kernels.KERNELS:
        mod = kernels.get(name)
        assert callable(kernels.builder(name)) and callable(mod.schedule_cpu) and callable(mod.schedule_cuda)
    with pytest.raises(LasnetError):
        kernels.get("nope")


@pytest.mark.parametrize("name,params", [("gather_conv3x3", dict(C=16, H=8, W=8, S=2, padded=True)),
                                         ("scatter_add", dict(C=16, Ho=8, Wo=8, S=2)),
                                         ("conv1x1", dict(C_in=16, C_out=32, H=8, W=8))])
def test_scheduled_picks_the_target_kinds_schedule(name, params):
    """``scheduled`` gives CUDA targets (cuda, nvptx) the module's CUDA schedule and the rest its CPU one."""
    from tvm import tirx

    from lasnet_tvm.targets import resolve_target

    def script(target, func=None):
        return kernels.scheduled(name, resolve_target(target), func, **params).mod.script()

    mod = kernels.get(name)
    cpu = mod.schedule_cpu(kernels.builder(name)(**params), **params).mod.script()
    cuda = mod.schedule_cuda(kernels.builder(name)(**params), **params).mod.script()
    assert cpu != cuda and "threadIdx.x" in cuda and "threadIdx" not in cpu
    assert script("llvm") == cpu and script("cuda -arch=sm_80") == cuda and script("nvptx -mcpu=sm_62") == cuda
    func = kernels.builder(name)(**params)
    assert isinstance(func, tirx.PrimFunc) and script("llvm", func) == cpu  # an already built function
