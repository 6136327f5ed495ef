"""The in-place zero border against a reference: border zero, interior untouched."""

from __future__ import annotations

import pytest
import torch

from _kernels import k


@pytest.mark.parametrize("C,H,W,Hq,Wq", [(8, 13, 13, 15, 15), (16, 14, 14, 17, 17), (3, 5, 7, 9, 10)])
def test_zero_border(C, H, W, Hq, Wq):
    f = torch.randn(C, Hq, Wq)
    want = torch.zeros(C, Hq, Wq)
    want[:, 1:H + 1, 1:W + 1] = f[:, 1:H + 1, 1:W + 1]
    k("zero_border", C=C, H=H, W=W, Hq=Hq, Wq=Wq)(f)
    assert torch.equal(f, want)
