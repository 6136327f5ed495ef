"""Export a LAS model for the compiler: batch norm folded, each LAS block one opaque ``lasnet::las_block`` op.

:func:`export_model` turns an eval-mode :class:`~lasnet_tvm.models.LASNet` into a ``torch.export`` program in
which the stem and head are ordinary (BN-folded) PyTorch ops and every LAS block is a call of the custom op
``lasnet::las_block(x, weights, spec)``. Its eager implementation is the sparse PyTorch reference, so the
exported program runs and can be checked; the importer (:mod:`.importer`) turns each call into a Relax
function that the ``LowerLASBlocks`` pass rewrites into the fused TensorIR kernels.
"""

from __future__ import annotations

from dataclasses import astuple, fields

import torch
import torch.nn.functional as F
from torch import nn

from ..archs import BlockSpec
from ..models import LASNet
from ..models.folded import FoldedBlock, fold_block, fold_conv_bn, sparse_block

# BlockSpec fields carried (as ints) by every las_block call, after the block's index in the network.
SPEC_FIELDS = [f.name for f in fields(BlockSpec) if f.name != "name"]


def spec_to_ints(index: int, spec: BlockSpec) -> list[int]:
    return [index] + [int(v) for v in astuple(spec)[1:]]


def spec_from_ints(ints) -> tuple[int, BlockSpec]:
    index, *values = [int(v) for v in ints]
    kw = dict(zip(SPEC_FIELDS, values))
    kw["downsample"] = bool(kw["downsample"])
    return index, BlockSpec(name=f"block{index}", **kw)


def folded_weights(fb: FoldedBlock) -> list[torch.Tensor]:
    """The flat weight list of a block, in the order the importer expects."""
    ws = [fb.w1, fb.b1, fb.wm, fb.bm.reshape(1), fb.w2, fb.b2, fb.w3, fb.b3]
    if fb.wd is not None:
        ws += [fb.wd, fb.bd]
    if fb.se is not None:
        ws += list(fb.se)
    return ws


def folded_from_weights(spec: BlockSpec, ws) -> FoldedBlock:
    """Inverse of :func:`folded_weights`."""
    ws = list(ws)
    fb = FoldedBlock(spec, ws[0], ws[1], ws[2], ws[3].reshape(()), *ws[4:8])
    rest = ws[8:]
    if spec.downsample:
        fb.wd, fb.bd, rest = rest[0], rest[1], rest[2:]
    if spec.se_channels:
        fb.se = tuple(rest[:4])
    return fb


@torch.library.custom_op("lasnet::las_block", mutates_args=())
def las_block(
    x: torch.Tensor, weights: list[torch.Tensor], spec: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One LAS block (batch 1): the block output, the number of active patches (int32 ``[1]``) and the
    coarse mask (int32 ``[g * g]``, row-major)."""
    _, bspec = spec_from_ints(spec)
    out, mask = sparse_block(folded_from_weights(bspec, weights), x)
    return out, mask.sum().reshape(1).to(torch.int32), mask.flatten().to(torch.int32)


@las_block.register_fake
def _(x, weights, spec):
    _, s = spec_from_ints(spec)
    return (x.new_empty(x.shape[0], s.c_out, s.out_size, s.out_size), x.new_empty(1, dtype=torch.int32),
            x.new_empty(s.grid * s.grid, dtype=torch.int32))


class _BlockOp(nn.Module):
    def __init__(self, index: int, block):
        super().__init__()
        fb = fold_block(block)
        self.spec = spec_to_ints(index, block.spec)
        for i, w in enumerate(folded_weights(fb)):
            self.register_buffer(f"w{i}", w.contiguous())
        self.n = len(folded_weights(fb))

    def forward(self, x):
        return torch.ops.lasnet.las_block(x, [getattr(self, f"w{i}") for i in range(self.n)], self.spec)


class InferenceNet(nn.Module):
    """The exported form of a LAS model: folded stem and head, one custom op per LAS block.

    ``forward(x)`` (batch 1) returns ``(logits, counts, masks)``: ``counts`` the active patches of each block
    (int32 ``[n_blocks]``), ``masks`` every block's coarse mask flattened and concatenated (int32).
    """

    def __init__(self, model: LASNet):
        super().__init__()
        self.family = model.spec.family
        conv, bn = (model.conv1, model.bn1) if self.family == "resnet" else (model.stem[0], model.stem[1])
        w, b = fold_conv_bn(conv, bn)
        self.stem_w, self.stem_b = nn.Parameter(w, False), nn.Parameter(b, False)
        self.stem_stride, self.stem_pad = conv.stride[0], conv.padding[0]
        self.blocks = nn.ModuleList(_BlockOp(i, b) for i, b in enumerate(model.blocks))
        self.fc = model.fc

    def forward(self, x):
        x = F.relu(F.conv2d(x, self.stem_w, self.stem_b, self.stem_stride, self.stem_pad))
        if self.family == "resnet":
            x = F.max_pool2d(x, 3, 2, 1)
        counts, masks = [], []
        for blk in self.blocks:
            x, c, m = blk(x)
            counts.append(c)
            masks.append(m)
        logits = self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return logits, torch.cat(counts), torch.cat(masks)


def export_model(model: LASNet) -> torch.export.ExportedProgram:
    """``torch.export`` the :class:`InferenceNet` of an eval-mode model at batch 1."""
    if model.se_pool != "active":
        from ..errors import LasnetError

        raise LasnetError(
            "this model pools squeeze-excitation densely (a converted official RegNetY): sparse kernels cannot "
            "execute it; convert with --se-pool active (and fine-tune) to compile it"
        )
    net = InferenceNet(model.eval()).eval()
    s = model.spec
    x = torch.zeros(1, 3, s.input_size, s.input_size)
    with torch.no_grad():
        return torch.export.export(net, (x,))
