"""Tuning never loses to the default schedules: the search space is the default schedule's tile knobs, the tasks
are the kernels ``compile`` looks up, and a record is kept only when it beats the default measured in the same
run (checked with a fake measurer, deterministically, and in a tiny real run); ``compile`` applies the kept
records and nothing else."""

from __future__ import annotations

import json

import pytest

tvm = pytest.importorskip("tvm")

from lasnet_tvm import kernels as K  # noqa: E402
from lasnet_tvm.archs import BlockSpec  # noqa: E402
from lasnet_tvm.tuning import device_target, tasks_of_block, tasks_of_spec, tune  # noqa: E402
from lasnet_tvm.tuning.database import (apply_trace, open_database, ranked_records, trace_id,  # noqa: E402
                                        workload_hash, workload_mod, write_manifest)
from lasnet_tvm.tuning.select import MARGIN, choose, select, symbolic_func  # noqa: E402
from lasnet_tvm.tuning.space import default_record_trace, knob_count, knob_trace, seed_default  # noqa: E402
from lasnet_tvm.tuning.tasks import Task  # noqa: E402

BLOCK = BlockSpec(name="b", stage=1, index=0, c_in=32, c_mid=16, c_out=32, stride=1, groups=1, se_channels=0,
                  in_size=16, out_size=16, S=4)  # g = 4: 16 patches; no downsample: residual added in place
SMALL = ("las_resnet50", "4-4-2-1", 64, 7, 0.25)  # arch, granularity, input size, classes, width


@pytest.fixture(scope="module")
def target():
    return device_target("local").target


def _equal(a, b) -> bool:
    import tvm_ffi

    return bool(tvm_ffi.structural_equal(a, b, map_free_vars=True))


def _bare(func):
    """``func`` without its symbol name and the tags the compiler adds (kernel, operator pattern)."""
    from lasnet_tvm.compiler.passes.lower_las_blocks import KERNEL_ATTR, PARAMS_ATTR

    for name in ("global_symbol", "op_pattern", KERNEL_ATTR, PARAMS_ATTR):
        func = func.without_attr(name) if func.attrs is not None and name in func.attrs else func
    return func


def _variant(task, target, k: int):
    """The knob trace of ``task`` with its ``k``-th knob moved off the default to another choice."""
    trace = knob_trace(task, target)
    knobs = [i for i in trace.insts if i.kind.name == "SampleCategorical"]
    inst = knobs[k % len(knobs)]
    return trace.with_decision(inst, (int(trace.decisions[inst]) + 1) % len(inst.attrs[0]),
                               remove_postproc=False)


def _record(db, task, trace, target, secs):
    from tvm.s_tir import meta_schedule as ms

    sch = tvm.s_tir.Schedule(workload_mod(task.func()))
    trace.apply_to_schedule(sch, remove_postproc=False)
    wl = db.commit_workload(workload_mod(task.func()))
    db.commit_tuning_record(ms.database.TuningRecord(sch.trace, wl, [secs], target,
                                                     ms.arg_info.ArgInfo.from_prim_func(task.func())))
    return trace_id(sch.trace), sch.mod["main"]


def test_space_is_the_default_schedule_with_tile_knobs(target):
    """Each kernel's design space, replayed as decided, is exactly its hand-written default schedule; the
    convolutions expose tiles as knobs, and another decision gives another (valid) schedule."""
    block = BlockSpec(name="b", stage=1, index=0, c_in=128, c_mid=64, c_out=128, stride=1, groups=1,
                      se_channels=0, in_size=56, out_size=56, S=4)  # LAS-ResNet-50 stage 1, narrower
    knobs = {}
    for t in tasks_of_block(block, static=True):
        want = K.scheduled(t.kernel, target, t.func(), **t.params).mod["main"]
        sch = tvm.s_tir.Schedule(t.func())
        knob_trace(t, target).apply_to_schedule(sch, remove_postproc=False)
        assert _equal(sch.mod["main"], want), t.kernel
        knobs[t.name] = knob_count(knob_trace(t, target))
        if knobs[t.name]:
            sch = tvm.s_tir.Schedule(t.func())
            _variant(t, target, 0).apply_to_schedule(sch, remove_postproc=False)
            assert not _equal(sch.mod["main"], want), t.kernel
    assert all(n >= 1 for name, n in knobs.items() if "conv" in name), knobs


def test_choose_needs_the_margin_over_the_same_runs_default():
    assert choose(1.0, [(0.5, "a"), (0.8, "b")]) == (0.5, "a")
    assert choose(1.0, [(1.0 - MARGIN / 2, "a"), (1.3, "b")]) is None  # within the noise margin: default
    assert choose(1.0, [(1.2, "a")]) is None and choose(1.0, []) is None
    assert choose(None, [(2.0, "a")]) == (2.0, "a")  # the default did not run: any candidate that did


class FakeMeasure:
    """Times by function (structural equality): the default, records and unscheduled function get the given
    ms; counts calls."""

    def __init__(self, table):
        self.table, self.calls = table, 0

    def __call__(self, funcs, target, builder, runner, errors=None):
        self.calls += 1
        out = []
        for f in funcs:
            ms_ = next((v for g, v in self.table if _equal(f, g)), None)
            assert ms_ is not None, "a function the test did not expect was measured"
            out.append(ms_)
        return out


@pytest.mark.parametrize("faster", [True, False])
def test_select_keeps_a_record_only_when_faster_than_the_default(tmp_path, target, faster):
    """Deterministic (fake measurer): the default's own record, though the fastest in the database, is not a
    candidate; a record is kept only if it measures faster than the default in the same selection."""
    from lasnet_tvm.tuning.select import default_schedule

    t = Task("conv1x1", dict(C_in=16, C_out=64, H=8, W=8, relu=False))  # two knobs
    db = open_database(tmp_path)
    seed_default(db, t, target, 1e-6)  # measured fastest in the search
    (rid_a, _), (rid_b, _) = (_record(db, t, _variant(t, target, k), target, s) for k, s in ((0, 2e-6), (1, 3e-6)))
    fa, fb = (apply_trace(_variant(t, target, k), symbolic_func(t)) for k in (0, 1))  # as select replays them
    default = default_schedule(t, symbolic_func(t), target)
    fake = FakeMeasure([(default, 1.0), (fa, 0.5 if faster else 0.99), (fb, 1.5), (t.func(), 9.0)])
    known: dict = {}
    select([t], target, db, known, None, None, check=False, progress=False, measure=fake)
    e = known[t.key]
    assert fake.calls == 2 and trace_id(default_record_trace(t, target)) not in e["candidates"]
    assert rid_a != rid_b and e["candidates"] == [rid_a, rid_b]
    assert e["untuned_ms"] == 1.0 and e["unscheduled_ms"] == 9.0
    if faster:
        assert (e["chosen"], e["record"], e["tuned_ms"]) == ("tuned", rid_a, 0.5)
    else:
        assert (e["chosen"], e["record"], e["tuned_ms"]) == ("default", None, 0.99)


def _lowered(model, target, database, fusion="all", static=False):
    """The LAS kernels of the module ``compile`` builds right before ``ApplyTunedSchedules`` (``{task key:
    PrimFunc}``), and the module right after it."""
    from lasnet_tvm.compiler.export import export_model
    from lasnet_tvm.compiler.importer import import_exported
    from lasnet_tvm.compiler.pipeline import apply_passes, lasnet_passes

    passes = lasnet_passes(target, fusion, static, database)
    upto = next(i for i, p in enumerate(passes) if p.info.name == "ApplyTunedSchedules")
    before = apply_passes(import_exported(export_model(model)), passes[:upto])
    kernels = _kernel_funcs(before)  # before the pass, which updates the module in place
    return kernels, passes[upto](before)


def _kernel_funcs(mod) -> dict:
    """``{task key: PrimFunc}`` of the LAS kernels in ``mod``."""
    from lasnet_tvm.compiler.passes.lower_las_blocks import KERNEL_ATTR, PARAMS_ATTR
    from lasnet_tvm.tuning.tasks import task_key

    return {task_key(str(f.attrs[KERNEL_ATTR]), json.loads(str(f.attrs[PARAMS_ATTR]))): f
            for _, f in mod.functions_items()
            if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and KERNEL_ATTR in f.attrs}


def test_tasks_are_the_kernels_compile_looks_up(target):
    """The tasks are exactly the kernels compile queries the database for (the in-place conv3 + scatter-add of
    S >= 4 included), each with the very workload compile has; the static operators' tasks too."""
    from lasnet_tvm.block_plan import block_plan
    from lasnet_tvm.models import build_model
    from lasnet_tvm.tuning import static_op_tasks
    from lasnet_tvm.tuning.static_ops import static_key
    from lasnet_tvm.tuning.tasks import task_key

    class Recorder:
        def __init__(self):
            self.kernels, self.static = {}, set()

        def query_schedule(self, kernel, params, func, target=None):
            self.kernels[task_key(kernel, params)] = func
            return None

        def query_static(self, func, target=None):
            self.static.add(static_key(func))
            return None

        def describe(self):
            return {}

    model = build_model(*SMALL).eval()
    tasks = {t.key: t for t in tasks_of_spec(model.spec, static=False)}
    assert any(t.kernel == "patch_conv1x1" and t.params.get("Ho") for t in tasks.values())  # in-place epilogue
    rec = Recorder()
    _lowered(model, target, rec)
    assert set(rec.kernels) == set(tasks)
    for key, func in rec.kernels.items():  # the workload itself: the function compile queries is the task's
        assert _equal(_bare(func), _bare(symbolic_func(tasks[key]))), tasks[key].name
    assert {t.key for t in static_op_tasks(model, target)} <= rec.static and rec.static
    # the static build lowers every block with block_plan(static=True), which is what the static tasks are
    static = {task_key(st.kernel, st.params) for b in model.spec.blocks for st in block_plan(b, static=True)}
    assert static <= {t.key for t in tasks_of_spec(model.spec, static=True)}


def test_compile_applies_the_kept_records_only(tmp_path, target):
    """A task whose manifest keeps its tuned record gets exactly that record's schedule in compile; a task whose
    manifest chose the default gets the default, though its database holds a record."""
    from lasnet_tvm.compiler.passes.apply_tuned_schedules import TUNED_ATTR
    from lasnet_tvm.models import build_model
    from lasnet_tvm.tuning import TunedSchedules

    model = build_model(*SMALL).eval()
    tasks = tasks_of_spec(model.spec, static=False)
    kept = next(t for t in tasks if t.kernel == "patch_conv1x1" and "Ho" in t.params)
    dropped = next(t for t in tasks if t.kernel == "masker_conv1x1")
    db = open_database(tmp_path)
    entries = []
    for t, chosen in ((kept, "tuned"), (dropped, "default")):
        rid, _ = _record(db, t, _variant(t, target, 1), target, 1e-6)
        entries.append({**t.to_json(), "chosen": chosen, "record": rid if chosen == "tuned" else None,
                        "variant": "unit" if chosen == "tuned" else None, "checked": True,
                        "workload": workload_hash(workload_mod(t.func()))})
    write_manifest(tmp_path, {"device": "local", "tasks": entries})
    before, after = _lowered(model, target, TunedSchedules(tmp_path))
    after = _kernel_funcs(after)
    tuned = {k for k, f in after.items() if TUNED_ATTR in f.attrs}
    assert tuned == {kept.key}  # the default-chosen task keeps its default schedule despite its record
    (rec,) = [r for r in ranked_records(open_database(tmp_path), kept) if trace_id(r.trace) == entries[0]["record"]]
    want = apply_trace(rec.trace, before[kept.key].without_attr("global_symbol"), "unit")
    got = _bare(after[kept.key].without_attr(TUNED_ATTR))
    assert _equal(got.body, _bare(want).body), (dict(got.attrs), dict(want.attrs))


@pytest.mark.slow  # a real MetaSchedule run (about 2 min); the selection logic is checked above with a fake measurer
def test_tiny_tuning_run_never_keeps_a_slower_record(tmp_path, target):
    """A real run (few trials, one small task): the search starts from the default (its record, measured in
    this run, is in the database), every record it measures lies in the default's knob space, and a kept
    record measured faster than the default in the same run."""
    t = Task("conv1x1", dict(C_in=16, C_out=64, H=8, W=8, relu=False))  # two knobs
    m = tune([t], "local", tmp_path, trials=4, per_iter=4, progress=False)
    (e,) = m["tasks"]
    recs = ranked_records(open_database(tmp_path), t)
    ids = [trace_id(r.trace) for r in recs]
    assert trace_id(default_record_trace(t, target)) in ids and len(recs) >= 2
    def kinds(trace):  # the schedule's steps (MetaSchedule stores traces simplified: lookups may go)
        return [i.kind.name for i in trace.insts if not i.kind.name.startswith(("Get", "EnterPostproc"))]

    assert all(kinds(r.trace) == kinds(default_record_trace(t, target)) for r in recs)
    assert e["untuned_ms"] is not None
    if e["chosen"] == "tuned":
        assert e["tuned_ms"] <= (1 - MARGIN) * e["untuned_ms"] and e["record"] in ids
    else:
        assert e["chosen"] == "default" and e["record"] is None
