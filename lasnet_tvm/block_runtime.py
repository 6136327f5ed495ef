"""Compile and run one whole LAS block with the TensorIR kernels of :mod:`lasnet_tvm.kernels`.

>>> blk = CompiledBlock.build(fold_block(model.layer1[0]), target="llvm", fusion="all")
>>> out, mask = blk(x)          # x: [C_in, H, W] (or [1, C_in, H, W]) torch tensor or tvm tensor

Fusion levels (paper Table 1): ``"none"`` (separate masker, dense conv1, gather, window conv3x3, conv3,
scatter into a zero canvas, add + ReLU), ``"masker"`` (masker fused into conv1), ``"masker+gather"`` (also the
gather fused into conv3x3), ``"all"`` (also the scatter fused with the residual add). ``static=True`` builds
the dense static block (same kernels/schedules style). The kernels are compiled once per object; buffers
are preallocated for the largest ``P`` (all patches) and sliced to the active count read from the masker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import tvm

from . import kernels as K
from .errors import LasnetError
from .models.folded import FoldedBlock
from .kernels._common import dense_padded_extent, padded_extent
from .targets import resolve_target, target_kind

FUSIONS = ("none", "masker", "masker+gather", "all")


def compile_kernel(name: str, target, **params):
    """Build, schedule (default schedule for ``target``) and compile kernel ``name``; returns its function."""
    mod = K.get(name)
    func = K.builder(name)(**params)
    tgt = resolve_target(target)
    kind = target_kind(tgt)
    sch = mod.schedule_cuda(func, **params) if kind == "cuda" else mod.schedule_cpu(func, **params)
    ex = tvm.compile(sch.mod, target=tgt)
    return ex["main"]


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
    fusion: str
    static: bool
    device: torch.device
    fns: dict = field(default_factory=dict)
    bufs: dict = field(default_factory=dict)
    tv: dict = field(default_factory=dict)

    @classmethod
    def build(cls, fb: FoldedBlock, target="llvm", fusion: str = "all", static: bool = False) -> "CompiledBlock":
        """Compile every kernel of the block and preallocate its buffers.

        Parameters
        ----------
        fb : FoldedBlock
            BN-folded weights (float32).
        target : str, dict or tvm Target
            See :func:`lasnet_tvm.targets.resolve_target`.
        fusion : {"none", "masker", "masker+gather", "all"}
            Fusion level of the dynamic block (ignored when ``static``).
        static : bool
            Build the dense static block instead.
        """
        if fusion not in FUSIONS:
            raise LasnetError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
        _check(fb)
        tgt = resolve_target(target)
        device = torch.device("cuda" if target_kind(tgt) == "cuda" else "cpu")
        blk = cls(fb, tgt, fusion, static, device)
        blk._compile()
        blk._alloc()
        return blk

    # ------------------------------------------------------------------ build
    def _compile(self) -> None:
        s, t = self.fb.spec, self.target
        H, Ho, S, st, G = s.in_size, s.out_size, s.S, s.stride, s.groups
        f = self.fns
        if self.fb.wd is not None:
            f["down"] = compile_kernel("conv1x1", t, C_in=s.c_in, C_out=s.c_out, H=H, W=H, stride=st, relu=False)
        if self.static:
            f["conv1"] = compile_kernel("conv1x1", t, C_in=s.c_in, C_out=s.c_mid, H=H, W=H, pad_for=st)
            f["conv2"] = compile_kernel("conv3x3", t, C=s.c_mid, H=H, W=H, stride=st, groups=G, padded=True)
            if self.fb.se is not None:
                f["se"] = compile_kernel("se_dense", t, C=s.c_mid, R=self.fb.se[0].shape[0], H=Ho, W=Ho)
            f["conv3"] = compile_kernel("conv1x1", t, C_in=s.c_mid, C_out=s.c_out, H=Ho, W=Ho, relu=False)
            f["add"] = compile_kernel("add_relu", t, C=s.c_out, H=Ho, W=Ho)
            return
        if self.fusion == "none":
            f["masker"] = compile_kernel("masker", t, C_in=s.c_in, H=H, W=H, S=S, stride=st)
            f["conv1"] = compile_kernel("conv1x1", t, C_in=s.c_in, C_out=s.c_mid, H=H, W=H)
        else:
            # with the gather fused, conv1 is stored zero-bordered so that windows need no bounds checks
            f["masker_conv1"] = compile_kernel("masker_conv1x1", t, C_in=s.c_in, C_mid=s.c_mid, H=H, W=H, S=S,
                                               stride=st, pad=self.fusion != "masker")
        if self.fusion in ("none", "masker"):
            f["gather"] = compile_kernel("gather", t, C=s.c_mid, H=H, W=H, S=S, stride=st)
            f["conv2"] = compile_kernel("window_conv3x3", t, C=s.c_mid, S=S, stride=st, groups=G)
        else:
            f["conv2"] = compile_kernel("gather_conv3x3", t, C=s.c_mid, H=H, W=H, S=S, stride=st, groups=G,
                                        padded=True)
        if self.fb.se is not None:
            f["se"] = compile_kernel("se", t, C=s.c_mid, R=self.fb.se[0].shape[0], Ho=Ho, S=S)
        f["conv3"] = compile_kernel("patch_conv1x1", t, C_in=s.c_mid, C_out=s.c_out, S=S)
        if self.fusion == "all":
            f["scatter_add"] = compile_kernel("scatter_add", t, C=s.c_out, Ho=Ho, Wo=Ho, S=S)
        else:
            f["scatter"] = compile_kernel("scatter", t, C=s.c_out, Ho=Ho, Wo=Ho, S=S)
            f["add"] = compile_kernel("add_relu", t, C=s.c_out, H=Ho, W=Ho)

    def _alloc(self) -> None:
        fb, s, dev = self.fb, self.fb.spec, self.device
        H, Ho, S, st = s.in_size, s.out_size, s.S, s.stride
        g = s.grid
        GG = g * g
        L = (S - 1) * st + 3
        b = self.bufs

        def put(name, t):
            b[name] = t.to(dev, torch.float32 if t.is_floating_point() else t.dtype).contiguous()

        put("w1", fb.w1), put("b1", fb.b1)
        put("w1m", torch.cat([fb.w1, fb.wm[None]], 0)), put("b1m", torch.cat([fb.b1, fb.bm.reshape(1)]))
        put("wm", fb.wm), put("bm", fb.bm.reshape(1))
        put("w2t", fb.w2.permute(1, 2, 3, 0)), put("b2", fb.b2)
        put("w3", fb.w3), put("b3", fb.b3)
        if fb.wd is not None:
            put("wd", fb.wd), put("bd", fb.bd)
            b["ident"] = torch.empty(s.c_out, Ho, Ho, device=dev)
        if fb.se is not None:
            for k, t in zip(("se_w1", "se_b1", "se_w2", "se_b2"), fb.se):
                put(k, t)
        if self.static:
            hq = dense_padded_extent(H, st)
            b["f1"] = torch.zeros(s.c_mid, hq, hq, device=dev)
            b["f2"] = torch.empty(s.c_mid, Ho, Ho, device=dev)
            b["f2se"] = torch.empty(s.c_mid, Ho, Ho, device=dev)
            b["f3"] = torch.empty(s.c_out, Ho, Ho, device=dev)
        else:
            b["f1"] = torch.empty(s.c_mid, H, H, device=dev)
            hp = padded_extent(H, S, st)
            b["f1p"] = torch.zeros(s.c_mid, hp, hp, device=dev)
            b["mask"] = torch.zeros(GG, dtype=torch.int32, device=dev)
            b["idx"] = torch.zeros(GG, dtype=torch.int32, device=dev)
            b["count"] = torch.zeros(1, dtype=torch.int32, device=dev)
            b["win"] = torch.empty(GG, s.c_mid, L, L, device=dev)
            b["c2"] = torch.empty(GG, s.c_mid, S, S, device=dev)
            b["c2se"] = torch.empty(GG, s.c_mid, S, S, device=dev)
            b["p3"] = torch.empty(GG, s.c_out, S, S, device=dev)
            b["canvas"] = torch.empty(s.c_out, Ho, Ho, device=dev)
        # zero-copy tvm views of every buffer, converted once
        self.tv = {k: tvm.runtime.from_dlpack(v) for k, v in b.items()}
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
        return x.contiguous(), squeeze

    def active_count(self) -> int:
        """Number of active patches of the last call (read from the masker's count buffer)."""
        if self.device.type == "cpu":
            return int(self._count_np[0])
        return int(self.bufs["count"].item())

    def __call__(self, x, out: torch.Tensor | None = None):
        """Run the block on ``x`` (``[C_in, H, W]`` or ``[1, C_in, H, W]``); returns ``(out, mask)``."""
        s, f, tv = self.fb.spec, self.fns, self.tv
        x, squeeze = self._input(x)
        Ho = s.out_size
        if out is None:
            out = torch.empty(s.c_out, Ho, Ho, device=self.device)
        xt, ot = tvm.runtime.from_dlpack(x), tvm.runtime.from_dlpack(out)
        if "down" in f:
            f["down"](xt, tv["wd"], tv["bd"], tv["ident"])
            ident = tv["ident"]
        else:
            ident = xt
        if self.static:
            f["conv1"](xt, tv["w1"], tv["b1"], tv["f1"])
            f["conv2"](tv["f1"], tv["w2t"], tv["b2"], tv["f2"])
            f2 = tv["f2"]
            if "se" in f:
                f["se"](f2, tv["se_w1"], tv["se_b1"], tv["se_w2"], tv["se_b2"], tv["f2se"])
                f2 = tv["f2se"]
            f["conv3"](f2, tv["w3"], tv["b3"], tv["f3"])
            f["add"](ident, tv["f3"], ot)
            res = out
            return (res if squeeze else res[None]), None
        if "masker" in f:
            f["masker"](xt, tv["wm"], tv["bm"], tv["mask"], tv["idx"], tv["count"])
            f["conv1"](xt, tv["w1"], tv["b1"], tv["f1"])
        else:
            f1 = tv["f1"] if self.fusion == "masker" else tv["f1p"]
            f["masker_conv1"](xt, tv["w1m"], tv["b1m"], f1, tv["mask"], tv["idx"], tv["count"])
        P = self.active_count()
        cm, co, S = s.c_mid, s.c_out, s.S
        L = (S - 1) * s.stride + 3
        idx = tv["idx"]._create_view((P,))
        c2 = tv["c2"]._create_view((P, cm, S, S))
        if "gather" in f:
            win = tv["win"]._create_view((P, cm, L, L))
            f["gather"](tv["f1"], idx, win)
            f["conv2"](win, tv["w2t"], tv["b2"], c2)
        else:
            f["conv2"](tv["f1p"], idx, tv["w2t"], tv["b2"], c2)
        if "se" in f:
            c2se = tv["c2se"]._create_view((P, cm, S, S))
            f["se"](c2, idx, tv["se_w1"], tv["se_b1"], tv["se_w2"], tv["se_b2"], c2se)
            c2 = c2se
        p3 = tv["p3"]._create_view((P, co, S, S))
        f["conv3"](c2, tv["w3"], tv["b3"], p3)
        if "scatter_add" in f:
            f["scatter_add"](ident, p3, idx, ot)
        else:
            f["scatter"](p3, idx, tv["canvas"])
            f["add"](ident, tv["canvas"], ot)
        mask = self.bufs["mask"].view(s.grid, s.grid) != 0
        return (out if squeeze else out[None]), (mask if squeeze else mask[None])
