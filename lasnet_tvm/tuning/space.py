"""The search space of a kernel task: its hand-written default schedule with the tile sizes as knobs.

MetaSchedule's generic space (``post-order-apply``) starts from the unscheduled function and, within a few hundred
trials on a CPU, finds schedules several times slower than the kernels' hand-written ones. Here a kernel's
space is its default schedule (``schedule_cpu`` / ``schedule_cuda``) itself: the inner factor of every two-way
``split`` that tiles a loop of constant extent exactly becomes a ``SampleCategorical`` knob over nearby divisors
(decided, in the design space, at the default's factor). The design space therefore *is* the default
schedule; the search explores the other tilings of the same loop structure (vector widths, register tiles,
parallel chunks). Other splits (a guarded tail, several factors, a unit tile) keep their factors.

:func:`seed_default` puts the default schedule, measured in the same run, into the database before the search,
so that the evolutionary search starts from it (its initial population takes the best measured records).
"""

from __future__ import annotations

import math

from tvm import tirx


def default_schedule_of(task, target):
    """The ``tvm.s_tir.Schedule`` of ``task``'s default schedule on the function MetaSchedule tunes."""
    from .. import kernels as K

    return K.scheduled(task.kernel, target, task.func(), **task.params)


def _split_extents(trace, func) -> dict:
    """``{index of a Split instruction in trace.insts: extent of the loop it splits}`` (ints; symbolic
    extents are left out), found by replaying ``trace`` onto ``func``."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    out: dict = {}
    insts = list(trace.insts)

    def provider(inst, inputs, attrs, decision):
        if inst.kind.name == "Split":
            extent = sch.get(inputs[0]).extent
            i = next((k for k, ins in enumerate(insts) if ins.same_as(inst)), None)
            if isinstance(extent, tirx.IntImm) and i is not None:
                out[i] = int(extent)
        return decision

    trace.apply_to_schedule(sch, remove_postproc=False, decision_provider=provider)
    return out


#: Most values a knob offers (the divisors nearest the default's, on a log scale).
MAX_CHOICES = 8


def _choices(factors, extent: int) -> list[int] | None:
    """The inner tiles a split ``factors`` of a loop of ``extent`` may take, the default's included, or None when
    the split is no knob. Only two-way splits that tile the loop exactly are knobs, and every choice keeps each
    of the two loops longer than one (a unit loop that appears or goes changes the number of loops the later
    steps of the schedule address, e.g. after ``compute_at``)."""
    if len(factors) != 2 or factors[1] is None:
        return None
    inner = int(factors[1])
    outer = extent // inner if factors[0] is None else int(factors[0])
    if inner < 2 or outer < 2 or outer * inner != extent:
        return None
    divisors = [d for d in range(2, extent // 2 + 1) if extent % d == 0]
    near = sorted(divisors, key=lambda d: (abs(math.log(d / inner)), d))[:MAX_CHOICES]
    return sorted(set(near) | {inner})


def knob_trace(task, target):
    """The default schedule of ``task`` (for ``target``) as a trace whose exact two-way splits of constant loops
    take their inner factor from a ``SampleCategorical`` knob decided at the default's factor."""
    from tvm.s_tir.schedule import Instruction, InstructionKind, Trace

    trace = default_schedule_of(task, target).trace
    extents = _split_extents(trace, task.func())
    sample = InstructionKind.get("SampleCategorical")
    insts, decisions = [], dict(trace.decisions)
    for i, ins in enumerate(trace.insts):
        if ins.kind.name == "Split" and i in extents:
            factors = [None if f is None else int(f) for f in list(ins.inputs)[1:]]
            choices = _choices(factors, extents[i])
            if choices is not None and len(choices) > 1:
                rv = tirx.Var(f"k{i}", "int32")
                probs = [tirx.FloatImm("float32", 1.0 / len(choices))] * len(choices)
                knob = Instruction(sample, [], [choices, probs], [rv])
                insts.append(knob)
                decisions[knob] = choices.index(factors[1])
                ins = Instruction(ins.kind, [ins.inputs[0], None, rv], ins.attrs, ins.outputs)
        insts.append(ins)
    return Trace(insts, decisions)


def knob_count(trace) -> int:
    """The number of knobs in a trace of :func:`knob_trace`."""
    return sum(ins.kind.name == "SampleCategorical" for ins in trace.insts)


def knob_space(trace):
    """A MetaSchedule space generator of one design space, ``trace`` (a :func:`knob_trace`: the default schedule).
    No mutators: MetaSchedule's change what the hand-written schedule fixes (its tile-size mutator would make
    unit loops); the evolutionary search draws the knobs at random and ranks the draws with its cost model."""
    from tvm.s_tir import meta_schedule as ms

    def apply(sch):
        trace.apply_to_schedule(sch, remove_postproc=False)
        return sch

    return ms.space_generator.ScheduleFn(apply, sch_rules=[], postprocs=[], mutator_probs={})


def default_record_trace(task, target):
    """The trace of the default schedule as the search's records hold it (the knobs at their defaults)."""
    from tvm import s_tir

    from .database import workload_mod

    sch = s_tir.Schedule(workload_mod(task.func()))
    knob_trace(task, target).apply_to_schedule(sch, remove_postproc=False)
    return sch.trace


def seed_default(db, task, target, run_ms: float):
    """Commit the default schedule of ``task`` to ``db`` as a record measured at ``run_ms`` (unless a record
    of that trace is there); return its trace id."""
    from tvm.s_tir import meta_schedule as ms

    from .database import ranked_records, trace_id, workload_mod

    trace = default_record_trace(task, target)
    rid = trace_id(trace)
    if any(trace_id(r.trace) == rid for r in ranked_records(db, task)):
        return rid
    wl = db.commit_workload(workload_mod(task.func()))
    db.commit_tuning_record(ms.database.TuningRecord(trace, wl, [run_ms / 1e3], target,
                                                     ms.arg_info.ArgInfo.from_prim_func(task.func())))
    return rid
