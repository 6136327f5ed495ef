"""LowerLASBlocks: LAS block functions -> the block plan's kernels, computing what the block functions did."""

import numpy as np
import pytest
import tvm

from _compiler import random_input, small_model, vm
from lasnet_tvm.compiler.export import export_model
from lasnet_tvm.compiler.importer import SPEC_ATTR, import_exported
from lasnet_tvm.compiler.passes.lower_las_blocks import KERNEL_ATTR, LowerLASBlocks
from lasnet_tvm.errors import LasnetError


@pytest.mark.parametrize("fusion", ["all", "none"])
def test_lower_pass_replaces_block_functions_and_keeps_results(fusion):
    model = small_model(seed=2)
    mod = import_exported(export_model(model))
    lowered = LowerLASBlocks(fusion=fusion)(mod)
    assert not [f for f in lowered.functions.values() if f.attrs is not None and SPEC_ATTR in f.attrs]
    kernels = {str(f.attrs[KERNEL_ATTR]) for f in lowered.functions.values()
               if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and KERNEL_ATTR in f.attrs}
    if fusion == "all":
        assert {"masker_conv1x1", "gather_conv3x3", "patch_conv1x1", "scatter_add"} <= kernels
    else:
        assert {"masker", "gather", "window_conv3x3", "scatter", "add_relu"} <= kernels
    # the un-scheduled lowering already computes the same thing as the dense block functions
    x = random_input(1)
    before = vm(mod)["main"](tvm.runtime.tensor(x))
    after = vm(lowered)["main"](tvm.runtime.tensor(x))
    np.testing.assert_allclose(after[0].numpy(), before[0].numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(after[2].numpy(), before[2].numpy())


def test_unknown_fusion_is_a_one_line_error():
    with pytest.raises(LasnetError, match="unknown fusion 'some'; choose one of none, masker, masker\\+gather, all"):
        LowerLASBlocks(fusion="some")
