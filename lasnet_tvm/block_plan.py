"""The kernel sequence of a LAS block, declared once: which kernels, with which shapes, on which buffers.

:func:`block_plan` lists the :class:`Step` s of a block for a fusion level (paper Table 1) or the static block;
:func:`prepared_weights` gives the weights in the layouts the kernels take. The compiler's ``LowerLASBlocks``
pass turns a plan into Relax ``call_tir`` bindings.

Buffer names: ``x`` (block input ``[C_in, H, W]``), ``ident`` (identity or downsample output), ``out`` (block
output); weights (see :func:`prepared_weights`); activations ``f1``, ``mask``, ``idx``, ``count``, ``win``,
``c2``, ``c2se``, ``p3``, ``canvas``, ``f2``, ``f2se``, ``f3``. A dimension ``"P"`` is the number of active
patches, known only at run time (read from ``count``); inputs named ``idx`` of such steps are the first ``P``
entries of the masker's index list.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .archs import BlockSpec
from .errors import LasnetError
from .kernels.shapes import dense_padded_extent, pack_weight_1x1, pack_weight_3x3, padded_extent

if TYPE_CHECKING:
    from .models.folded import FoldedBlock



class Fusion(str, enum.Enum):
    """Fusion level of a dynamic block (paper Table 1). The values are the names the CLI's ``--fusion`` and the
    JSON results use; members compare equal to them.

    ``NONE``: separate masker, dense conv1, gather, window conv3x3, conv3, scatter into a zero canvas, add + ReLU;
    ``MASKER``: the masker fused into conv1; ``MASKER_GATHER``: also the gather fused into the 3x3 conv;
    ``ALL``: also the scatter fused with the residual add.
    """

    NONE = "none"
    MASKER = "masker"
    MASKER_GATHER = "masker+gather"
    ALL = "all"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """The names, in order (click choices, JSON keys)."""
        return tuple(f.value for f in cls)

    @classmethod
    def parse(cls, value) -> "Fusion":
        """``value`` (a member or its name) as a member.

        Raises
        ------
        LasnetError
            Not a fusion level.
        """
        try:
            return cls(value)
        except ValueError:
            raise LasnetError(f"unknown fusion {value!r}; choose one of {', '.join(cls.values())}") from None


class MaskerPlacement(str, enum.Enum):
    """Where a dynamic block computes its masker and conv1 (paper Sec. 3.4, App. B.1). The values are the names
    the CLI's ``--masker`` and the manifest use; members compare equal to them.

    ``FUSED``: the masker is one more output channel of conv1, which runs dense over the whole map
    (``masker_conv1x1``), and the 3x3 conv gathers each active patch's window from that map;
    ``SEPARATE``: the masker runs first, alone (``masker``), and conv1 runs only on each active patch's window
    (``gather_conv1x1``: halo recomputed per patch), written into the zero-bordered map that ``gather_conv3x3``
    reads: cheaper at low activation rates and in stride-2 blocks. Only with fusion ``all``; the rest of the
    block is the same.
    """

    FUSED = "fused"
    SEPARATE = "separate"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """The names, in order (click choices, JSON values)."""
        return tuple(m.value for m in cls)

    @classmethod
    def parse(cls, value) -> "MaskerPlacement":
        """``value`` (a member or its name) as a member.

        Raises
        ------
        LasnetError
            Not a placement.
        """
        try:
            return cls(value)
        except ValueError:
            raise LasnetError(f"unknown masker placement {value!r}; choose one of {', '.join(cls.values())}") from None


#: Smallest S for which conv3 does the in-place scatter-add in its epilogue. Measured in LAS-ResNet-50 at r = 0.5
#: (per-call profile, both variants in one process): S = 4 stages 0.5 ms faster fused, S = 1 the same, S = 2
#: 0.25 ms slower (the epilogue's read-modify-writes of 2-float patch rows, channel after channel, lose to the
#: separate kernel's sweep over each channel's patches).
FUSED_SCATTER_MIN_S = 4


@dataclass(frozen=True)
class Step:
    """One kernel call: ``kernel(**params)`` applied to ``inputs``, writing ``outputs``.

    ``outputs`` holds ``(name, shape, dtype)``; a shape may contain ``"P"``. Outputs named in ``zeroed`` must
    be zero-filled before the call: the kernel writes their interior only (a zero border that the next
    kernel reads without bounds checks). ``inplace``: the kernel updates its first input, which becomes its
    (only) output; the call passes the inputs alone.
    """

    kernel: str
    params: dict
    inputs: tuple
    outputs: tuple
    zeroed: tuple = ()
    inplace: bool = False


def _f(name, *shape):
    return (name, tuple(shape), "float32")


def block_plan(s: BlockSpec, fusion: Fusion | str = Fusion.ALL, static: bool = False,
               inplace_residual: bool = False,
               masker: MaskerPlacement | str = MaskerPlacement.FUSED) -> list[Step]:
    """The kernel steps of block ``s`` (``fusion``: a :class:`Fusion` or its name; ``fusion`` and ``masker``
    are ignored for the static block).

    ``masker``: the :class:`MaskerPlacement` of the dynamic block (or its name); ``separate`` needs fusion
    ``all`` (a :class:`~lasnet_tvm.errors.LasnetError` otherwise: the other fusion levels are the paper's
    ablation of the fused form).

    ``inplace_residual``: with ``fusion="all"``, a block without a downsample branch adds its active patches into
    its input in place (the paper's scatter-add, cost proportional to the active patches), in conv3's epilogue
    (``patch_conv1x1`` with ``Ho``) for patches of at least :data:`FUSED_SCATTER_MIN_S` pixels a side. Valid when the input
    is non-negative and not used afterwards, as in a network, where every block input is a ReLU output; the
    default writes a new output map (``relu(input)`` outside the patches) and leaves the input untouched.
    """
    H, Ho, S, st, G = s.in_size, s.out_size, s.S, s.stride, s.groups
    cm, co, R = s.c_mid, s.c_out, s.se_channels
    gg = s.grid * s.grid
    L = (S - 1) * st + 3
    steps: list[Step] = []
    if s.downsample:
        steps.append(Step("conv1x1", dict(C_in=s.c_in, C_out=co, H=H, W=H, stride=st, relu=False),
                          ("x", "wdp", "bd"), (_f("ident", co, Ho, Ho),)))
    ident = "ident" if s.downsample else "x"
    if static:
        Hd = dense_padded_extent(H, st)
        steps.append(Step("conv1x1", dict(C_in=s.c_in, C_out=cm, H=H, W=H, pad_for=st), ("x", "w1p", "b1"),
                          (_f("f1", cm, Hd, Hd),), zeroed=("f1",)))
        steps.append(Step("conv3x3", dict(C=cm, H=H, W=H, stride=st, groups=G, padded=True), ("f1", "w2b", "b2"),
                          (_f("f2", cm, Ho, Ho),)))
        f2 = "f2"
        if R:
            steps.append(Step("se_dense", dict(C=cm, R=R, H=Ho, W=Ho), ("f2", "se_w1", "se_b1", "se_w2", "se_b2"),
                              (_f("f2se", cm, Ho, Ho),)))
            f2 = "f2se"
        # conv3 with the residual add + ReLU as its epilogue
        steps.append(Step("conv1x1", dict(C_in=cm, C_out=co, H=Ho, W=Ho, residual=True), (f2, "w3p", "b3", ident),
                          (_f("out", co, Ho, Ho),)))
        return steps
    fusion, masker = Fusion.parse(fusion), MaskerPlacement.parse(masker)
    index_outs = (("mask", (gg,), "int32"), ("idx", (gg,), "int32"), ("count", (1,), "int32"))
    masker_alone = Step("masker", dict(C_in=s.c_in, H=H, W=H, S=S, stride=st), ("x", "wm", "bm"), index_outs)
    Hp = padded_extent(H, S, st)
    if masker is MaskerPlacement.SEPARATE:
        if fusion is not Fusion.ALL:
            raise LasnetError(f"masker placement separate needs fusion all, not {fusion.value}")
        # the masker alone, then conv1 on the active patches' windows only, written where gather-conv3x3 reads
        steps.append(masker_alone)
        steps.append(Step("gather_conv1x1", dict(C_in=s.c_in, C_out=cm, H=H, W=H, S=S, stride=st),
                          ("x", "idx", "w1p", "b1"), (_f("f1", cm, Hp, Hp),)))
    elif fusion is Fusion.NONE:
        steps.append(masker_alone)
        steps.append(Step("conv1x1", dict(C_in=s.c_in, C_out=cm, H=H, W=H), ("x", "w1p", "b1"), (_f("f1", cm, H, H),)))
    elif fusion is Fusion.MASKER:  # the separate gather reads the plain conv1 map
        steps.append(Step("masker_conv1x1", dict(C_in=s.c_in, C_mid=cm, H=H, W=H, S=S, stride=st),
                          ("x", "w1p", "b1", "wm", "bm"), (_f("f1", cm, H, H),) + index_outs))
    else:  # gather-conv3x3 reads windows straight from a zero-bordered conv1 map
        steps.append(Step("masker_conv1x1", dict(C_in=s.c_in, C_mid=cm, H=H, W=H, S=S, stride=st, pad=True),
                          ("x", "w1p", "b1", "wm", "bm"), (_f("f1", cm, Hp, Hp),) + index_outs, zeroed=("f1",)))
    if fusion in (Fusion.NONE, Fusion.MASKER):
        steps.append(Step("gather", dict(C=cm, H=H, W=H, S=S, stride=st), ("f1", "idx"), (_f("win", "P", cm, L, L),)))
        steps.append(Step("window_conv3x3", dict(C=cm, S=S, stride=st, groups=G), ("win", "w2t", "b2"),
                          (_f("c2", "P", cm, S, S),)))
    else:
        steps.append(Step("gather_conv3x3", dict(C=cm, H=H, W=H, S=S, stride=st, groups=G, padded=True),
                          ("f1", "idx", "w2b", "b2"), (_f("c2", "P", cm, S, S),)))
    c2 = "c2"
    if R:
        steps.append(Step("se", dict(C=cm, R=R, Ho=Ho, S=S), ("c2", "idx", "se_w1", "se_b1", "se_w2", "se_b2"),
                          (_f("c2se", "P", cm, S, S),)))
        c2 = "c2se"
    inplace = fusion is Fusion.ALL and inplace_residual and not s.downsample
    if inplace and S >= FUSED_SCATTER_MIN_S:  # conv3 adds its patches into x in place, in its epilogue
        steps.append(Step("patch_conv1x1", dict(C_in=cm, C_out=co, S=S, Ho=Ho), ("x", c2, "idx", "w3p", "b3"),
                          (_f("out", co, Ho, Ho),), inplace=True))
        return steps
    steps.append(Step("patch_conv1x1", dict(C_in=cm, C_out=co, S=S), (c2, "w3p", "b3"), (_f("p3", "P", co, S, S),)))
    if inplace:
        steps.append(Step("scatter_add", dict(C=co, Ho=Ho, Wo=Ho, S=S, inplace=True), ("x", "p3", "idx"),
                          (_f("out", co, Ho, Ho),), inplace=True))
    elif fusion is Fusion.ALL:
        steps.append(Step("scatter_add", dict(C=co, Ho=Ho, Wo=Ho, S=S), (ident, "p3", "idx"), (_f("out", co, Ho, Ho),)))
    else:
        steps.append(Step("scatter", dict(C=co, Ho=Ho, Wo=Ho, S=S), ("p3", "idx"), (_f("canvas", co, Ho, Ho),)))
        steps.append(Step("add_relu", dict(C=co, H=Ho, W=Ho), (ident, "canvas"), (_f("out", co, Ho, Ho),)))
    return steps


def prepared_weights(fb: "FoldedBlock") -> dict[str, np.ndarray]:
    """The block's weights in the kernels' layouts (float32 numpy arrays, contiguous).

    ``w1p``, ``w3p``, ``wdp``: 1x1 conv weights packed by :func:`lasnet_tvm.kernels.shapes.pack_weight_1x1`
    (also the patch conv's);
    ``w2t``: the 3x3 weights ``[C_in/g, 3, 3, C_out]``; ``w2b``: packed for the padded gather-conv
    and the static conv3x3 (:func:`lasnet_tvm.kernels.shapes.pack_weight_3x3`).
    """
    t = {
        "b1": fb.b1, "wm": fb.wm, "bm": fb.bm.reshape(1),
        "w2t": fb.w2.permute(1, 2, 3, 0), "b2": fb.b2, "b3": fb.b3,
    }
    out = {k: np.ascontiguousarray(v.detach().cpu().numpy(), dtype=np.float32) for k, v in t.items()}
    out["w1p"] = pack_weight_1x1(fb.w1.detach().cpu().numpy())
    out["w3p"] = pack_weight_1x1(fb.w3.detach().cpu().numpy())
    out["w2b"] = pack_weight_3x3(fb.w2.detach().cpu().numpy(), fb.spec.groups)
    if fb.wd is not None:
        out["wdp"] = pack_weight_1x1(fb.wd.detach().cpu().numpy())
        out["bd"] = np.ascontiguousarray(fb.bd.detach().cpu().numpy(), dtype=np.float32)
    if fb.se is not None:
        for k, v in zip(("se_w1", "se_b1", "se_w2", "se_b2"), fb.se):
            out[k] = np.ascontiguousarray(v.cpu().numpy(), dtype=np.float32)
    return out
