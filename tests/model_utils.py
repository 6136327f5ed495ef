"""Helpers shared by model tests: random eval-mode statistics so that folding and masks are exercised."""

import torch

from lasnet_tvm.models import LASNet
from lasnet_tvm.models.masker import Masker


@torch.no_grad()
def randomize_(model: LASNet, seed: int = 0, masker_bias: float = 0.0, force: bool = False) -> LASNet:
    """Give every BN random statistics/affine terms and every masker the bias ``masker_bias``.

    With ``force`` the masker weights are zeroed too, so every mask is all ones (bias > 0) or all zeros.
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.copy_(torch.randn(n, generator=g) * 0.1)
        elif isinstance(m, Masker):
            m.conv2.bias.copy_(torch.tensor([masker_bias, 0.0]))
            if force:
                m.conv2.weight.zero_()
    return model.eval()
