"""Property tests: the compiled library and the PyTorch model agree on random inputs across the four backbones,
and refuse the same bad inputs (NaN, infinity, empty batches, other shapes and dtypes) with the same message.

Each backbone is compiled once per session (``compiled_tiny``); hypothesis varies the inputs: batch, scale
and offset (so the maskers see anything from nearly all-off to all-on), and the bad values' positions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TINY, TINY_SIZE
from lasnet_tvm.compiler import CompiledModel
from lasnet_tvm.errors import LasnetError
from lasnet_tvm.runner import run_pytorch

FEW = settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _loaded(compiled_tiny, arch):
    model, pt, so, _ = compiled_tiny(arch)
    return model, pt, CompiledModel.load(so)


@st.composite
def images(draw, size=TINY_SIZE):
    n = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.floats(0.05, 4.0))
    offset = draw(st.floats(-2.0, 2.0))
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 3, size, size)) * scale + offset).astype(np.float32)


@pytest.mark.parametrize("arch", sorted(TINY))
@FEW
@given(x=images())
def test_compiled_and_pytorch_agree_on_random_inputs(compiled_tiny, arch, x):
    model, pt, lib = _loaded(compiled_tiny, arch)
    got = lib.run(x)
    ref = run_pytorch(pt, x)
    with torch.no_grad():
        direct = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ref.logits, direct, rtol=1e-6, atol=1e-6)  # the checkpoint is the model
    scale = max(1.0, float(np.abs(ref.logits).max()))
    np.testing.assert_allclose(got.logits, ref.logits, rtol=1e-4, atol=1e-4 * scale)
    assert set(got.masks) == set(ref.masks)
    for name, mask in ref.masks.items():
        np.testing.assert_array_equal(got.masks[name], mask, err_msg=name)
    # the compiled rate is the share of active patches, PyTorch's the share of active pixels: equal where S
    # divides the feature map (every block of these models)
    np.testing.assert_allclose(got.rates, ref.rates, rtol=1e-6, atol=1e-6)


def _same_refusal(pt, lib, x):
    """Both backends refuse ``x`` with the same LasnetError message; returns it."""
    with pytest.raises(LasnetError) as a:
        run_pytorch(pt, x)
    with pytest.raises(LasnetError) as b:
        lib.run(x)
    assert str(a.value) == str(b.value)
    assert "\n" not in str(a.value)
    return str(a.value)


@st.composite
def poisoned(draw):
    """A valid float32 batch with NaN or +-inf at random places (1 to 3 values)."""
    x = draw(images())
    bad = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    flat = x.reshape(-1)
    for i in draw(st.lists(st.integers(0, flat.size - 1), min_size=1, max_size=3)):
        flat[i] = bad
    return x


@pytest.mark.parametrize("arch", sorted(TINY))
@FEW
@given(x=poisoned())
def test_nan_and_inf_are_refused_alike(compiled_tiny, arch, x):
    _, pt, lib = _loaded(compiled_tiny, arch)
    msg = _same_refusal(pt, lib, x)
    assert ("NaN" if np.isnan(x).any() else "infinite") in msg
    first = int(np.argwhere(~np.isfinite(x))[0][0])
    assert f"first in image {first}" in msg


SHAPES = st.tuples(st.integers(0, 2), st.sampled_from([1, 3, 4]), st.sampled_from([16, TINY_SIZE - 1, TINY_SIZE]),
                   st.sampled_from([16, TINY_SIZE, TINY_SIZE + 1]))
DTYPES = st.sampled_from(["float16", "float32", "float64", "int8", "uint8", "int32", "bool"])


@pytest.mark.parametrize("arch", ["las_resnet50", "las_regnety_400mf"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=SHAPES, dtype=DTYPES)
def test_any_shape_and_dtype_runs_or_is_refused_alike(compiled_tiny, arch, shape, dtype):
    """Valid arrays (a batch >= 1 of [3, 64, 64] float images) run on both with the same result; every other
    array is refused by both with the same one-line message."""
    _, pt, lib = _loaded(compiled_tiny, arch)
    x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(dtype)
    valid = shape[0] >= 1 and shape[1:] == (3, TINY_SIZE, TINY_SIZE) and dtype.startswith("float")
    if not valid:
        msg = _same_refusal(pt, lib, x)
        if shape[0] == 0 and shape[1] == 3:
            assert "no images" in msg
        elif shape[1] != 3:
            assert "expected [N, 3, H, W]" in msg
        elif shape[2:] != (TINY_SIZE, TINY_SIZE):
            assert f"takes {TINY_SIZE}x{TINY_SIZE} images" in msg
        else:
            assert f"dtype is {dtype}" in msg
        return
    got, ref = lib.run(x), run_pytorch(pt, x)
    scale = max(1.0, float(np.abs(ref.logits).max()))
    np.testing.assert_allclose(got.logits, ref.logits, rtol=1e-4, atol=1e-4 * scale)
    for name, mask in ref.masks.items():
        np.testing.assert_array_equal(got.masks[name], mask, err_msg=name)
