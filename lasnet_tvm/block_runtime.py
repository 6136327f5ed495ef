"""Compile and run one whole LAS block with the TensorIR kernels of :mod:`lasnet_tvm.kernels`.

>>> blk = CompiledBlock.build(fold_block(model.layer1[0]), target="llvm", fusion="all")
>>> out, mask = blk(x)          # x: [C_in, H, W] (or [1, C_in, H, W]) torch tensor or tvm tensor

Fusion levels: :class:`lasnet_tvm.block_plan.Fusion` (paper Table 1). ``static=True`` builds the dense static
block (same kernels/schedules style). The kernel sequence is the block's plan
(:func:`lasnet_tvm.block_plan.block_plan`, shared with the compiler). The kernels are compiled once per object; buffers
are preallocated for the largest ``P`` (all patches). On the CPU they are sliced to the active count read from the
masker; on CUDA (``bounded``) the patch kernels run on the whole buffers and read the count on the device
(:func:`lasnet_tvm.kernels._bounded.bounded`), so a call never waits for the device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import tvm

from . import kernels as K
from .block_plan import Fusion, MaskerPlacement, block_plan, prepared_weights
from .errors import LasnetError
from .kernels._bounded import bounded as bounded_kernel
from .models.folded import FoldedBlock
from .targets import resolve_target, target_kind


def scheduled_kernel(name: str, target, **params) -> tvm.IRModule:
    """Kernel ``name`` built with ``params`` under its default schedule for ``target`` (:func:`.kernels.scheduled`)."""
    return K.scheduled(name, target, **params).mod


def compile_kernel_module(name: str, target, count_after: int | None = None, **params):
    """Build, schedule (default schedule for ``target``) and compile kernel ``name``; returns its runtime module.

    The kernel is the module's ``"main"``; the module also gives ``time_evaluator``. ``count_after``: a patch
    kernel in bounded form, the patch count an input after that many inputs (:func:`~.kernels._bounded.bounded`).
    """
    tgt = resolve_target(target)
    mod = scheduled_kernel(name, tgt, **params)
    if count_after is not None:
        mod = tvm.IRModule({"main": bounded_kernel(mod["main"], count_after)})
    return tvm.compile(mod, target=tgt).jit()


def uses_patches(step, shapes: dict) -> bool:
    """Whether ``step`` writes or reads active-patch buffers (``shapes``: activation shapes by name)."""
    return any("P" in shape for _, shape, _ in step.outputs) or any(
        n == "idx" or "P" in shapes.get(n, ()) for n in step.inputs)


def compile_kernel(name: str, target, **params):
    """Like :func:`compile_kernel_module`, but returns the kernel function."""
    return compile_kernel_module(name, target, **params)["main"]


def _check(fb: FoldedBlock) -> None:
    s = fb.spec
    if s.S < 1 or s.S > s.out_size:
        raise LasnetError(f"granularity S={s.S} of block {s.name} exceeds its feature size {s.out_size}")
    if s.c_mid % s.groups:
        raise LasnetError(f"block {s.name}: {s.c_mid} channels not divisible by {s.groups} groups")
    want = {
        "w1": (s.c_mid, s.c_in), "b1": (s.c_mid,), "wm": (s.c_in,), "bm": (),
        "w2": (s.c_mid, s.c_mid // s.groups, 3, 3), "b2": (s.c_mid,), "w3": (s.c_out, s.c_mid), "b3": (s.c_out,),
    }
    for k, shape in want.items():
        if tuple(getattr(fb, k).shape) != shape:
            raise LasnetError(f"block {s.name}: {k} has shape {tuple(getattr(fb, k).shape)}, expected {shape}")
    if fb.wd is None and (s.c_in != s.c_out or s.stride != 1):
        raise LasnetError(f"block {s.name}: needs a downsample branch (c_in {s.c_in} -> {s.c_out}, stride {s.stride})")
    if fb.wd is not None and tuple(fb.wd.shape) != (s.c_out, s.c_in):
        raise LasnetError(f"block {s.name}: wd has shape {tuple(fb.wd.shape)}, expected {(s.c_out, s.c_in)}")


@dataclass
class CompiledBlock:
    """A LAS block compiled for one target; call it on an input to get ``(out, mask)``.

    Build with :meth:`build`. ``mask`` is the coarse mask ``[g, g]`` (bool) of the dynamic block, ``None`` for
    the static block. Outputs are new torch tensors on the block's device.
    """

    fb: FoldedBlock
    target: tvm.target.Target
    fusion: Fusion
    static: bool
    device: torch.device
    bounded: bool = False  # patch kernels on all-patch buffers, the count read on the device
    masker: MaskerPlacement = MaskerPlacement.FUSED  # where the masker and conv1 run (dynamic block)
    steps: list = field(default_factory=list)  # the block's plan (lasnet_tvm.block_plan)
    mods: list = field(default_factory=list)  # one compiled runtime module per step
    fns: list = field(default_factory=list)  # their kernels
    bufs: dict = field(default_factory=dict)  # weights and activations (torch)
    tv: dict = field(default_factory=dict)  # their tvm views
    shapes: dict = field(default_factory=dict)  # activation shapes, "P" = active patches

    @classmethod
    def build(cls, fb: FoldedBlock, target="llvm", fusion: Fusion | str = Fusion.ALL,
              static: bool = False, bounded: bool | None = None,
              masker: MaskerPlacement | str = MaskerPlacement.FUSED) -> "CompiledBlock":
        """Compile every kernel of the block and preallocate its buffers.

        Parameters
        ----------
        fb : FoldedBlock
            BN-folded weights (float32).
        target : str, dict or tvm Target
            See :func:`lasnet_tvm.targets.resolve_target`.
        fusion : Fusion or its name
            Fusion level of the dynamic block (ignored when ``static``).
        static : bool
            Build the dense static block instead.
        bounded : bool, optional
            Run the patch kernels on buffers of all patches, the active count read on the device (no host read
            per call); default: on CUDA.
        masker : MaskerPlacement or its name
            Masker placement of the dynamic block (:class:`lasnet_tvm.block_plan.MaskerPlacement`).
        """
        fusion, masker = Fusion.parse(fusion), MaskerPlacement.parse(masker)
        _check(fb)
        tgt = resolve_target(target)
        device = torch.device("cuda" if target_kind(tgt) == "cuda" else "cpu")
        bounded = device.type == "cuda" if bounded is None else bounded
        blk = cls(fb, tgt, fusion, static, device, bounded=bounded and not static, masker=masker)
        blk._compile()
        blk._alloc()
        return blk

    # ------------------------------------------------------------------ build
    def _compile(self) -> None:
        """Compile every step of the block's plan (:func:`lasnet_tvm.block_plan.block_plan`)."""
        self.steps = block_plan(self.fb.spec, self.fusion, self.static, masker=self.masker)
        self.shapes = {name: shape for st in self.steps for name, shape, _ in st.outputs}
        self.mods = [compile_kernel_module(st.kernel, self.target, self._count_after(st), **st.params)
                     for st in self.steps]
        self.fns = [m["main"] for m in self.mods]

    def _alloc(self) -> None:
        """Weights in the kernels' layouts; every activation at its largest size (``P`` = all patches).

        Zero-bordered maps are zeroed once here: the kernels never write their border.
        """
        dev, G = self.device, self.fb.spec.grid ** 2
        b = self.bufs
        for name, w in prepared_weights(self.fb).items():
            b[name] = torch.from_numpy(w).to(dev, copy=True)  # a torch allocation: 64-byte aligned for DLPack
        for st in self.steps:
            for name, shape, dtype in st.outputs:
                if name != "out":
                    b[name] = torch.zeros([G if d == "P" else d for d in shape], dtype=getattr(torch, dtype), device=dev)
        self.tv = {k: tvm.runtime.from_dlpack(v) for k, v in b.items()}  # zero-copy views, converted once
        if dev.type == "cpu" and not self.static:
            self._count_np = b["count"].numpy()

    # ------------------------------------------------------------------ run
    def _input(self, x):
        s = self.fb.spec
        if isinstance(x, tvm.runtime.Tensor):
            x = torch.from_dlpack(x)
        if not isinstance(x, torch.Tensor):
            raise LasnetError(f"block input must be a torch or tvm tensor, got {type(x).__name__}")
        squeeze = x.dim() == 3
        if x.dim() == 4:
            if x.shape[0] != 1:
                raise LasnetError(f"compiled blocks run batch 1; got batch {x.shape[0]}")
            x = x[0]
        if tuple(x.shape) != (s.c_in, s.in_size, s.in_size):
            raise LasnetError(f"block {s.name}: input shape {tuple(x.shape)}, expected {(s.c_in, s.in_size, s.in_size)}")
        if x.dtype != torch.float32 or x.device.type != self.device.type:
            raise LasnetError(f"block input must be float32 on {self.device.type}, got {x.dtype} on {x.device.type}")
        x = x.contiguous()
        if x.data_ptr() % 64:  # a view into a larger tensor: the kernels assume 64-byte aligned buffers
            x = x.clone()
        return x, squeeze

    def active_count(self) -> int:
        """Number of active patches of the last call (read from the masker's count buffer)."""
        if self.device.type == "cpu":
            return int(self._count_np[0])
        return int(self.bufs["count"].item())

    def _count_after(self, step) -> int | None:
        """In bounded form, the number of inputs of a patch step before its ``count`` input; else None."""
        return len(step.inputs) if self.bounded and uses_patches(step, self.shapes) else None

    def _run(self, x, out):
        """Run every step; returns the arguments each step was called with."""
        env = dict(self.tv, x=tvm.runtime.from_dlpack(x), out=tvm.runtime.from_dlpack(out))
        P, calls = None, []
        for st, fn in zip(self.steps, self.fns):
            if self._count_after(st) is not None:  # whole buffers; the kernel reads the count itself
                args = [env[n] for n in st.inputs] + [env["count"]] + [env[n] for n, _, _ in st.outputs]
                fn(*args)
                calls.append(args)
                continue
            if P is None and uses_patches(st, self.shapes):
                P = self.active_count()  # the masker has run: size the patch buffers to the active patches
                env["idx"] = self.tv["idx"]._create_view((P,))
                for name, shape in self.shapes.items():
                    if "P" in shape:
                        env[name] = self.tv[name]._create_view(tuple(P if d == "P" else d for d in shape))
            args = [env[n] for n in st.inputs] + [env[n] for n, _, _ in st.outputs]
            fn(*args)
            calls.append(args)
        return calls

    def __call__(self, x, out: torch.Tensor | None = None):
        """Run the block on ``x`` (``[C_in, H, W]`` or ``[1, C_in, H, W]``); returns ``(out, mask)``."""
        s = self.fb.spec
        x, squeeze = self._input(x)
        if out is None:
            out = torch.empty(s.c_out, s.out_size, s.out_size, device=self.device)
        self._run(x, out)
        if self.static:
            return (out if squeeze else out[None]), None
        mask = self.bufs["mask"].view(s.grid, s.grid) != 0
        return (out if squeeze else out[None]), (mask if squeeze else mask[None])

    def time_steps(self, x, repeat: int = 5, min_repeat_ms: int = 5) -> list[dict]:
        """Time each kernel of the block on input ``x`` with TVM's ``time_evaluator``.

        The block runs once on ``x`` (which sets the number of active patches ``P``), then each step is timed
        alone on the arguments of that run: ``repeat`` samples, each averaging enough calls to last
        ``min_repeat_ms``. Returns one dict per step: ``kernel``, ``params``, ``P`` (``None`` for steps
        without patches) and ``median_ms`` and ``samples_ms``.
        """
        s = self.fb.spec
        x, _ = self._input(x)
        out = torch.empty(s.c_out, s.out_size, s.out_size, device=self.device)
        calls = self._run(x, out)
        dev = tvm.cuda(0) if self.device.type == "cuda" else tvm.cpu(0)
        P = None if self.static else self.active_count()
        res = []
        for st, mod, args in zip(self.steps, self.mods, calls):
            timer = mod.time_evaluator("main", dev, number=1, repeat=repeat,
                                        min_repeat_ms=int(min_repeat_ms))
            samples = [t * 1e3 for t in timer(*args).results]
            res.append({"kernel": st.kernel, "params": dict(st.params),
                        "P": P if uses_patches(st, self.shapes) else None,
                        "median_ms": float(np.median(samples)), "samples_ms": samples})
        return res
