"""Scatter kernels against PyTorch: scatter-add (fused with the residual add; a new map or in place) and the
unfused scatter into a canvas + add_relu."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _kernels import CONV_CASES, CONV_RATES, close, fresh, k, patch_case
from lasnet_tvm.models.folded import scatter_add_relu


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("rate", CONV_RATES)
def test_scatter_add_and_unfused_scatter(case, rate):
    c = patch_case(case, rate)
    C, S, Ho, idx, ref3 = c.C, c.S, c.Ho, c.idx, c.ref3
    o = fresh(2 * C, Ho, Ho)
    k("scatter_add", C=2 * C, Ho=Ho, Wo=Ho, S=S)(c.ident, ref3, idx, o)
    close(o, c.want)
    # in place, on a non-negative identity (a block input): only the active patches are touched
    nonneg = c.ident.relu()
    want_nonneg = scatter_add_relu(c.s, nonneg, ref3, idx)
    k("scatter_add", C=2 * C, Ho=Ho, Wo=Ho, S=S, inplace=True)(nonneg, ref3, idx)
    close(nonneg, want_nonneg)
    canvas = torch.full((2 * C, Ho, Ho), 7.0)
    k("scatter", C=2 * C, Ho=Ho, Wo=Ho, S=S)(ref3, idx, canvas)
    g = c.s.grid
    big = torch.zeros(2 * C, g * S, g * S)
    for n, q in enumerate(idx.tolist()):
        big[:, (q // g) * S:(q // g + 1) * S, (q % g) * S:(q % g + 1) * S] = ref3[n]
    close(canvas, big[:, :Ho, :Ho])
    o2 = fresh(2 * C, Ho, Ho)
    k("add_relu", C=2 * C, H=Ho, W=Ho)(c.ident, canvas, o2)
    close(o2, c.want)
    if c.P:  # the active pixels really changed (the test can fail)
        assert not torch.allclose(c.want, F.relu(c.ident))
