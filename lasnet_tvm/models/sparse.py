"""The whole LAS network executed sparsely in plain PyTorch (reference (b) and the PyTorch dynamic baseline)."""

from __future__ import annotations

import torch

from .backbones import LASNet
from .folded import FoldedBlock, fold_block, sparse_block


class SparseLASNet:
    """Eval-mode LAS network with folded weights; each block runs :func:`~lasnet_tvm.models.folded.sparse_block`.

    Parameters
    ----------
    model : LASNet
        A LAS model with ``se_pool="active"`` (the dense SE pooling cannot run sparsely).
    """

    def __init__(self, model: LASNet):
        if model.se_pool != "active":
            raise ValueError("the sparse execution needs se_pool='active' (dense SE pooling sees skipped pixels)")
        self.model = model.eval()
        self.folded: list[FoldedBlock] = [fold_block(b) for b in model.blocks]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, return_masks: bool = False):
        h = self.model.forward_stem(x)
        masks = []
        for fb in self.folded:
            h, mask = sparse_block(fb, h)
            masks.append(mask)
        logits = self.model.head(h)
        return (logits, masks) if return_masks else logits
