"""The masker kernels against PyTorch: masker fused into conv1 (plain and zero-bordered conv1 map) and the
unfused masker."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _blocks import masker_diff, random_block, set_rate, untie
from _kernels import close, fresh, k, packed
from lasnet_tvm.kernels.shapes import padded_extent
from lasnet_tvm.models.folded import active_indices, coarse_mask

MASKER_CASES = [  # (C_in, C_mid, size, S, stride)
    (16, 8, 13, 4, 1), (16, 8, 12, 4, 1), (8, 6, 9, 1, 1), (16, 10, 13, 2, 2), (8, 8, 16, 8, 1),
    (8, 8, 15, 7, 1), (8, 8, 14, 7, 2),
    (128, 128, 34, 4, 1),  # a large stride-1 map: the row-vector conv1 schedule
]


@pytest.mark.parametrize("case", MASKER_CASES)
@pytest.mark.parametrize("rate", [0.0, 1.0, "natural"])
def test_masker_kernels(case, rate):
    c_in, c_mid, size, S, stride = case
    fb = random_block(c_in=c_in, c_mid=c_mid, c_out=c_in, size=size, stride=stride, S=S)
    x = torch.randn(c_in, size, size)
    if rate == "natural":
        untie(fb, x)
    else:
        set_rate(fb, x, rate)
    mask = coarse_mask(fb, x[None])[0].flatten()
    idx_ref = active_indices(mask.view(fb.spec.grid, -1))
    G = mask.numel()
    # fused: masker channel inside conv1
    f1, m, idx, cnt = fresh(c_mid, size, size), fresh(G, dtype=torch.int32), fresh(G, dtype=torch.int32), fresh(1, dtype=torch.int32)
    fn = k("masker_conv1x1", C_in=c_in, C_mid=c_mid, H=size, W=size, S=S, stride=stride)
    fn(x, packed(fb.w1), fb.b1, fb.wm, fb.bm.reshape(1), f1, m, idx, cnt)
    close(f1, F.relu(torch.einsum("oc,chw->ohw", fb.w1, x) + fb.b1[:, None, None]))
    assert torch.equal(m.bool(), mask)
    assert int(cnt[0]) == idx_ref.numel()
    assert torch.equal(idx[: int(cnt[0])], idx_ref)
    # fused, conv1 stored zero-bordered
    hp = padded_extent(size, S, stride)
    f1p = torch.zeros(c_mid, hp, hp)
    fn = k("masker_conv1x1", C_in=c_in, C_mid=c_mid, H=size, W=size, S=S, stride=stride, pad=True)
    fn(x, packed(fb.w1), fb.b1, fb.wm, fb.bm.reshape(1), f1p, m, idx, cnt)
    close(f1p[:, 1:size + 1, 1:size + 1], f1)
    f1p[:, 1:size + 1, 1:size + 1] = 0
    assert not f1p.any() and torch.equal(m.bool(), mask)  # the border stays zero
    # unfused masker
    m2, idx2, cnt2 = fresh(G, dtype=torch.int32), fresh(G, dtype=torch.int32), fresh(1, dtype=torch.int32)
    k("masker", C_in=c_in, H=size, W=size, S=S, stride=stride)(x, fb.wm, fb.bm.reshape(1), m2, idx2, cnt2)
    assert torch.equal(m2.bool(), mask)
    assert torch.equal(idx2[: int(cnt2[0])], idx_ref)
    if rate == "natural":
        assert masker_diff(fb, x).abs().min() > 1e-3
