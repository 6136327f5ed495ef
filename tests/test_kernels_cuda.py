"""The convolutions' CUDA schedules (implicit GEMMs), checked without a GPU.

- Device code: each conv kernel at LAS-ResNet-50's and a grouped RegNetY stage's shapes (S = 1, 2, 4, 7) built
  for sm_90 with nvcc; ptxas must report shared memory, no spills, and the conv's accumulator must be a register
  tile of at least 4 outputs per thread. Old archs get the same schedules as CUDA C without sm_80-only code.
- Compute: the same scheduled TensorIR, thread loops made serial, run on the CPU against PyTorch.
"""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

from _blocks import random_block, untie
from _cuda_ir import cuda_schedule_on_cpu, ptxas_report
from _kernels import close, fresh, packed, packed3x3, patch_case
from lasnet_tvm import kernels as K
from lasnet_tvm.kernels.shapes import dense_padded_extent, padded_extent
from lasnet_tvm.models.folded import active_indices, coarse_mask, scatter_add_relu
from lasnet_tvm.targets import cuda_source

CONV_SHAPES = [  # (kernel, params): ResNet-50 stages 1-4, a RegNetY-800MF grouped stage (group width 16)
    ("gather_conv3x3", dict(C=64, H=56, W=56, S=7)),
    ("gather_conv3x3", dict(C=128, H=28, W=28, S=4, padded=True)),
    ("gather_conv3x3", dict(C=256, H=14, W=14, S=2, padded=True)),
    ("gather_conv3x3", dict(C=512, H=7, W=7, S=1, padded=True)),
    ("gather_conv3x3", dict(C=128, H=56, W=56, S=4, stride=2, padded=True)),
    ("gather_conv3x3", dict(C=128, H=28, W=28, S=4, groups=8, padded=True)),
    ("window_conv3x3", dict(C=64, S=7)),
    ("window_conv3x3", dict(C=512, S=1)),
    ("window_conv3x3", dict(C=320, S=2, groups=20)),
    ("patch_conv1x1", dict(C_in=64, C_out=256, S=7)),
    ("patch_conv1x1", dict(C_in=128, C_out=512, S=4, Ho=28)),
    ("patch_conv1x1", dict(C_in=512, C_out=2048, S=1, Ho=7)),
    ("conv1x1", dict(C_in=256, C_out=64, H=56, W=56)),
    ("conv1x1", dict(C_in=512, C_out=1024, H=28, W=28, stride=2, relu=False)),
    ("conv3x3", dict(C=64, H=56, W=56)),
    ("conv3x3", dict(C=256, H=28, W=28, stride=2, padded=True)),
    ("conv3x3", dict(C=128, H=28, W=28, groups=8)),
    ("masker_conv1x1", dict(C_in=256, C_mid=64, H=56, W=56, S=4, pad=True)),
    ("masker_conv1x1", dict(C_in=1024, C_mid=256, H=14, W=14, S=2)),
    ("gather_conv1x1", dict(C_in=256, C_out=128, H=56, W=56, S=4, stride=2)),
    ("gather_conv1x1", dict(C_in=2048, C_out=512, H=7, W=7, S=1)),
]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("name,params", CONV_SHAPES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONV_SHAPES)])
def test_conv_kernel_uses_shared_memory_and_register_tiles(name, params):
    r = ptxas_report(name, "sm_90", **params)
    assert r.shared_bytes > 0, r
    assert r.outputs_per_thread >= 4, r
    assert r.spill_bytes == 0, r


@pytest.mark.parametrize("arch", ["sm_53", "sm_62", "sm_72"])
def test_old_archs_get_the_same_schedules(arch):
    """The CUDA C for pre-sm_80 archs stages tiles in shared memory with plain loads and barriers (no cp.async,
    no tensor-core instructions), so NVRTC/ptxas for those archs can build it."""
    for name, params in (CONV_SHAPES[1], CONV_SHAPES[9], CONV_SHAPES[15]):
        src = cuda_source(K.get(name).schedule_cuda(K.builder(name)(**params), **params).mod, arch)
        assert "__shared__" in src and "__syncthreads()" in src, name
        assert "cp.async" not in src and "mma" not in src, name


PATCH_CASES = [(8, 13, 4, 1, 1), (16, 13, 2, 1, 4), (8, 14, 7, 2, 1), (16, 9, 1, 1, 1), (12, 11, 4, 2, 3)]


@pytest.mark.parametrize("case", PATCH_CASES)
@pytest.mark.parametrize("rate", [0.0, 0.5, 1.0])
def test_patch_convs_under_cuda_schedule(case, rate):
    c = patch_case(case, rate)
    C, size, S, stride, groups = case
    out = fresh(c.P, C, S, S)
    cuda_schedule_on_cpu("gather_conv3x3", C=C, H=size, W=size, S=S, stride=stride, groups=groups)(
        c.f1, c.idx, c.w2t, c.fb.b2, out)
    close(out, c.ref)
    hp = padded_extent(size, S, stride)
    f1p = torch.zeros(C, hp, hp)
    f1p[:, 1:size + 1, 1:size + 1] = c.f1
    out = fresh(c.P, C, S, S)
    cuda_schedule_on_cpu("gather_conv3x3", C=C, H=size, W=size, S=S, stride=stride, groups=groups, padded=True)(
        f1p, c.idx, packed3x3(c.fb.w2, groups), c.fb.b2, out)
    close(out, c.ref)
    win = fresh(c.P, C, c.L, c.L)
    win.copy_(c.win_ref)
    out = fresh(c.P, C, S, S)
    cuda_schedule_on_cpu("window_conv3x3", C=C, S=S, stride=stride, groups=groups)(win, c.w2t, c.fb.b2, out)
    close(out, c.ref)
    p3 = fresh(c.P, 2 * C, S, S)
    cuda_schedule_on_cpu("patch_conv1x1", C_in=C, C_out=2 * C, S=S)(c.ref, packed(c.fb.w3), c.fb.b3, p3)
    close(p3, c.ref3)
    fused = c.ident.relu()  # the in-place scatter-add takes a ReLU output
    cuda_schedule_on_cpu("patch_conv1x1", C_in=C, C_out=2 * C, S=S, Ho=c.Ho)(fused, c.ref, c.idx, packed(c.fb.w3),
                                                                             c.fb.b3)
    close(fused, scatter_add_relu(c.s, c.ident.relu(), c.ref3, c.idx))


@pytest.mark.parametrize("C_in,C_out,size,stride,relu", [(16, 8, 13, 1, True), (8, 16, 13, 2, False),
                                                          (12, 20, 8, 2, False), (64, 128, 9, 1, True)])
def test_dense_conv1x1_under_cuda_schedule(C_in, C_out, size, stride, relu):
    x, w, b = torch.randn(C_in, size, size), torch.randn(C_out, C_in), torch.randn(C_out)
    Ho = -(-size // stride)
    out = fresh(C_out, Ho, Ho)
    cuda_schedule_on_cpu("conv1x1", C_in=C_in, C_out=C_out, H=size, W=size, stride=stride, relu=relu)(
        x, packed(w), b, out)
    ref = F.conv2d(x[None], w[:, :, None, None], b, stride=stride)[0]
    close(out, F.relu(ref) if relu else ref)


@pytest.mark.parametrize("C,size,stride,groups", [(8, 13, 1, 1), (16, 12, 2, 4), (32, 9, 1, 2), (8, 15, 2, 1)])
def test_dense_conv3x3_under_cuda_schedule(C, size, stride, groups):
    x, w, b = torch.randn(C, size, size), torch.randn(C, C // groups, 3, 3), torch.randn(C)
    ref = F.relu(F.conv2d(x[None], w, b, stride=stride, padding=1, groups=groups))[0]
    out = fresh(*ref.shape)
    cuda_schedule_on_cpu("conv3x3", C=C, H=size, W=size, stride=stride, groups=groups)(x, packed3x3(w, groups), b, out)
    close(out, ref)
    hq = dense_padded_extent(size, stride)
    xq = torch.zeros(C, hq, hq)
    xq[:, 1:size + 1, 1:size + 1] = x
    out = fresh(*ref.shape)
    cuda_schedule_on_cpu("conv3x3", C=C, H=size, W=size, stride=stride, groups=groups, padded=True)(
        xq, packed3x3(w, groups), b, out)
    close(out, ref)


@pytest.mark.parametrize("case", [(16, 8, 13, 4, 1), (8, 6, 9, 1, 1), (16, 10, 13, 2, 2), (8, 8, 14, 7, 2)])
def test_masker_conv1x1_under_cuda_schedule(case):
    c_in, c_mid, size, S, stride = case
    fb = random_block(c_in=c_in, c_mid=c_mid, c_out=c_in, size=size, stride=stride, S=S)
    x = torch.randn(c_in, size, size)
    untie(fb, x)
    mask = coarse_mask(fb, x[None])[0].flatten()
    idx_ref = active_indices(mask.view(fb.spec.grid, -1))
    G = mask.numel()
    hp = padded_extent(size, S, stride)
    f1p = torch.zeros(c_mid, hp, hp)
    m, idx, cnt = fresh(G, dtype=torch.int32), fresh(G, dtype=torch.int32), fresh(1, dtype=torch.int32)
    fn = cuda_schedule_on_cpu("masker_conv1x1", C_in=c_in, C_mid=c_mid, H=size, W=size, S=S, stride=stride, pad=True)
    fn(x, packed(fb.w1), fb.b1, fb.wm, fb.bm.reshape(1), f1p, m, idx, cnt)
    close(f1p[:, 1:size + 1, 1:size + 1], F.relu(torch.einsum("oc,chw->ohw", fb.w1, x) + fb.b1[:, None, None]))
    f1p[:, 1:size + 1, 1:size + 1] = 0
    assert not f1p.any() and torch.equal(m.bool(), mask)  # the border stays zero
    assert torch.equal(idx[: int(cnt[0])], idx_ref)


@pytest.mark.slow
def test_metaschedule_candidates_of_the_gather_conv_pass_verify_gpu_code():
    """The gather-conv's window reads are bounded, so MetaSchedule's multi-level tiling stages tiles of a sane size:
    some sampled CUDA candidates pass every CUDA postprocessor, VerifyGPUCode included."""
    import tvm
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    from lasnet_tvm.archs import BlockSpec
    from lasnet_tvm.tuning import tasks_of_block
    from lasnet_tvm.tuning.database import workload_mod

    block = BlockSpec(name="b", stage=1, index=0, c_in=256, c_mid=64, c_out=256, stride=1, groups=1, se_channels=0,
                      in_size=56, out_size=56, S=4)
    task = {t.kernel: t for t in tasks_of_block(block, rate=0.5)}["gather_conv3x3"]
    mod = workload_mod(task.func())
    target = tvm.target.Target({"kind": "cuda", "arch": "sm_90", "max_threads_per_block": 1024,
                                "max_shared_memory_per_block": 49152, "thread_warp_size": 32,
                                "registers_per_block": 65536})
    ctx = ms.TuneContext(mod=mod, target=target, space_generator="post-order-apply", search_strategy="replay-trace",
                         num_threads=1)
    spaces = ctx.space_generator.generate_design_space(mod)
    postprocs = ms.postproc.Postproc.create("cuda")
    for p in postprocs:
        p._initialize_with_tune_context(ctx)
    passed = 0
    for seed in range(40):
        sch = s_tir.Schedule(mod, seed=seed + 1)
        spaces[seed % len(spaces)].trace.apply_to_schedule(
            sch, remove_postproc=True, decision_provider=lambda inst, inputs, attrs, decision: None)
        passed += all(p.apply(sch) for p in postprocs)
    assert passed > 0
