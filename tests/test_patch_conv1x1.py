"""conv3 on the active patches against PyTorch, plain and with the in-place scatter-add in its epilogue."""

from __future__ import annotations

import pytest

from _kernels import CONV_CASES, CONV_RATES, close, fresh, k, packed, patch_case
from lasnet_tvm.models.folded import scatter_add_relu


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("rate", CONV_RATES)
def test_patch_conv1x1(case, rate):
    c = patch_case(case, rate)
    C, S = c.C, c.S
    p3 = fresh(c.P, 2 * C, S, S)
    k("patch_conv1x1", C_in=C, C_out=2 * C, S=S)(c.ref, packed(c.fb.w3), c.fb.b3, p3)
    close(p3, c.ref3)
    # conv3 with the in-place scatter-add in its epilogue: the patches never leave the kernel
    fused = c.ident.relu()
    want_nonneg = scatter_add_relu(c.s, c.ident.relu(), c.ref3, c.idx)
    k("patch_conv1x1", C_in=C, C_out=2 * C, S=S, Ho=c.Ho)(fused, c.ref, c.idx, packed(c.fb.w3), c.fb.b3)
    close(fused, want_nonneg)
