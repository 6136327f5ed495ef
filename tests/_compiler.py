"""Helpers of the compiler tests: a small random LAS model, its PyTorch reference, a Relax VM."""

from __future__ import annotations

import numpy as np
import torch
import tvm
from tvm import relax

from lasnet_tvm.models import build_model
from model_utils import randomize_

SIZE = 64


def small_model(arch="las_resnet50", gran="4-4-2-1", bias=None, seed=0, width=0.25):
    """A random eval-mode LAS model on ``SIZE`` x ``SIZE`` inputs (masker ``bias`` forces a rate)."""
    width = width if arch.startswith("las_resnet") else 0.5
    model = build_model(arch, gran, SIZE, 7, width)
    return randomize_(model, seed=seed, masker_bias=bias or 0.0, force=bias is not None)


def reference(model, x):
    """PyTorch logits and per-block coarse masks of ``model`` on ``x``."""
    with torch.no_grad():
        logits, stats = model(torch.from_numpy(x), return_stats=True)
    masks = [m[:, 0].bool().numpy() for m in stats["masks"]]
    return logits.numpy(), masks


def vm(mod):
    """A Relax VM of ``mod`` built for this CPU with TVM's default pipeline."""
    return relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())


def random_input(seed: int, n: int = 1) -> np.ndarray:
    """``n`` random float32 images ``[n, 3, SIZE, SIZE]``."""
    return np.random.default_rng(seed).standard_normal((n, 3, SIZE, SIZE)).astype(np.float32)
