"""ApplyTunedSchedules: tuned schedules reach the compiler through the ScheduleDatabase contract, before the
default schedules."""

from __future__ import annotations

import numpy as np
import tvm

from _compiler import random_input, reference, small_model
from lasnet_tvm import kernels as K
from lasnet_tvm.compiler import CompiledModel, compile_model, lasnet_passes
from lasnet_tvm.compiler.export import export_model
from lasnet_tvm.compiler.importer import import_exported
from lasnet_tvm.compiler.passes.apply_tuned_schedules import TUNED_ATTR, tuned_functions
from lasnet_tvm.compiler.passes.schedule_static_ops import default_static_schedule
from lasnet_tvm.targets import resolve_target

LLVM = resolve_target("llvm")
MARK = "test.from_database"


class OneKernelDatabase:
    """A ScheduleDatabase holding a schedule for every ``kernel`` and for the first static operator asked for;
    the schedules are the default ones, marked so that the test sees where each function's schedule came from."""

    def __init__(self, kernel: str):
        self.kernel, self.static_seen, self.queries = kernel, None, []

    def query_schedule(self, kernel, params, func, target):
        self.queries.append(kernel)
        if kernel != self.kernel:
            return None
        return K.scheduled(kernel, target, func, **params).mod["main"].with_attr(MARK, True)

    def query_static(self, func, target):
        if self.static_seen is not None:
            return None
        self.static_seen = func
        return default_static_schedule(func, target).with_attr(MARK, True)

    def describe(self):
        return {"dir": "memory", "device": "test"}


def _scheduled_module(model, database):
    mod = import_exported(export_model(model))
    return tvm.transform.Sequential(lasnet_passes(LLVM, database=database))(mod)


def test_tuned_first_then_defaults():
    db = OneKernelDatabase("gather_conv3x3")
    mod = _scheduled_module(small_model(seed=1), db)
    assert {"masker_conv1x1", "gather_conv3x3", "patch_conv1x1"} <= set(db.queries)
    prims = {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    assert all("tir.is_scheduled" in f.attrs for f in prims.values())
    tuned = {name for name, f in prims.items() if MARK in f.attrs}
    assert tuned == set(tuned_functions(mod)) == {name for name, f in prims.items() if TUNED_ATTR in f.attrs}
    gathers = {name for name in prims if name.startswith("gather_conv3x3")}
    assert gathers and gathers < tuned and len(tuned - gathers) == 1  # every gather-conv and one static op
    assert db.static_seen is not None


def test_no_database_gives_default_schedules_only():
    mod = _scheduled_module(small_model(seed=1), None)
    assert tuned_functions(mod) == []


def test_compile_manifest_names_the_tuned_functions():
    model = small_model(seed=2)
    result = compile_model(model, LLVM, database=OneKernelDatabase("patch_conv1x1"))
    t = result.manifest["tuned_schedules"]
    assert t["dir"] == "memory" and t["device"] == "test" and result.manifest["tuned"] is True
    assert any(n.startswith("patch_conv1x1") for n in t["applied"]) and len(t["applied"]) >= 2
    x = random_input(3)
    got = CompiledModel.from_executable(result.executable, result.manifest).run(x)
    logits, _ = reference(model, x)
    np.testing.assert_allclose(got.logits, logits, rtol=1e-4, atol=1e-4 * np.abs(logits).max())
