"""The LASNet masker and the mask geometry helpers (coarse grid, patch pooling, upsampling, dilation)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def patch_pool(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Average ``x`` over non-overlapping ``patch x patch`` windows, clipping the last ones at the border.

    Equals ``adaptive_avg_pool2d(x, H // patch)`` when ``patch`` divides ``H`` (the official masker).
    """
    if patch == 1:
        return x
    return F.avg_pool2d(x, patch, stride=patch, ceil_mode=True)


def upsample_mask(mask: torch.Tensor, S: int, out_size: int) -> torch.Tensor:
    """Nearest-upsample a coarse mask ``[B, 1, g, g]`` by ``S`` and crop it to ``out_size``."""
    if S == 1:
        return mask
    up = mask.repeat_interleave(S, dim=2).repeat_interleave(S, dim=3)
    return up[:, :, :out_size, :out_size]


def dilate_mask(mask: torch.Tensor, stride: int) -> torch.Tensor:
    """The input pixels conv1 must compute for an output mask (official ``ExpandMask``).

    Spread the output mask to input resolution (pixel (i, j) to (s*i, s*j)) and dilate it by the 3x3 box.
    """
    if stride > 1:
        b, c, h, w = mask.shape
        spread = mask.new_zeros(b, c, h * stride, w * stride)
        spread[:, :, ::stride, ::stride] = mask
        mask = spread
    return F.max_pool2d(mask, 3, stride=1, padding=1)


class Masker(nn.Module):
    """Pool the block input to the coarse grid, 1x1 conv (with bias) to 2 logits, then decide.

    Channel 0 means "compute". Training: hard Gumbel softmax (straight-through). Eval: ``logit0 >= logit1``.

    Parameters
    ----------
    in_channels : int
        Channels of the block input.
    patch_in : int
        Patch side in input pixels (``S * stride``).
    bias0 : float
        Initial bias of channel 0 (5.0 for ResNet, 10.0 for RegNet, as the official code).
    """

    def __init__(self, in_channels: int, patch_in: int, bias0: float = 5.0):
        super().__init__()
        self.patch_in = patch_in
        # The official parameter name is ``masker.conv2``.
        self.conv2 = nn.Conv2d(in_channels, 2, kernel_size=1, bias=True)
        with torch.no_grad():
            self.conv2.bias[0] = bias0

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The two logits on the coarse grid, ``[B, 2, g, g]``."""
        return self.conv2(patch_pool(x, self.patch_in))

    def forward(self, x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Coarse mask ``[B, 1, g, g]`` of 0/1 floats (with straight-through gradients in training)."""
        logits = self.logits(x)
        if self.training:
            return F.gumbel_softmax(logits, tau=temperature, hard=True, dim=1)[:, :1]
        return (logits[:, :1] >= logits[:, 1:]).to(x.dtype)
