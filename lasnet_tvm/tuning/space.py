"""The search space of a kernel task: its hand-written default schedule with the tile sizes as knobs.

MetaSchedule's generic space (``post-order-apply``) starts from the unscheduled function and, within a few hundred
trials on a CPU, finds schedules several times slower than the kernels' hand-written ones. Here a kernel's
space is its default schedule (``schedule_cpu`` / ``schedule_cuda``) itself: every ``split`` of a loop of
constant extent whose factors tile it exactly becomes a ``SamplePerfectTile`` (decided, in the design space,
at the default's factors) feeding that split. The design space therefore *is* the default schedule; sampling
and MetaSchedule's tile-size mutator explore the other tilings of the same loop structure (vector widths,
register tiles, parallel chunks). Splits that do not tile their loop exactly (a guarded tail, or a loop over
the symbolic patch count) keep their factors.

:func:`seed_default` puts the default schedule, measured in the same run, into the database before the search,
so that the evolutionary search starts from it (its initial population takes the best measured records).
"""

from __future__ import annotations

from tvm import tirx

#: Largest innermost tile a knob may take: twice the default's, at least this.
MIN_MAX_INNERMOST = 16


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


def _tiles(factors, extent: int) -> list[int] | None:
    """The split's factors as a perfect tiling of ``extent`` (one ``None`` inferred), or None if it is not one."""
    known = [int(f) for f in factors if f is not None]
    if len(factors) < 2 or len(known) < len(factors) - 1 or any(f < 1 for f in known):
        return None
    prod = 1
    for f in known:
        prod *= f
    if extent % prod or (len(known) == len(factors) and prod != extent):
        return None
    return [extent // prod if f is None else int(f) for f in factors]


def knob_trace(task, target):
    """The default schedule of ``task`` (for ``target``) as a trace whose exact splits of constant loops take
    their factors from ``SamplePerfectTile`` knobs decided at the default's factors."""
    from tvm.s_tir.schedule import Instruction, InstructionKind, Trace

    trace = default_schedule_of(task, target).trace
    extents = _split_extents(trace, task.func())
    sample = InstructionKind.get("SamplePerfectTile")
    insts, decisions = [], dict(trace.decisions)
    for i, ins in enumerate(trace.insts):
        if ins.kind.name == "Split" and i in extents:
            factors = [None if f is None else int(f) for f in list(ins.inputs)[1:]]
            tiles = _tiles(factors, extents[i])
            if tiles is not None and extents[i] > 1:
                rvs = [tirx.Var(f"k{i}_{j}", "int64") for j in range(len(tiles))]
                limit = max(MIN_MAX_INNERMOST, 2 * tiles[-1])
                knob = Instruction(sample, [ins.inputs[0]], [len(tiles), limit], rvs)
                insts.append(knob)
                decisions[knob] = tiles
                ins = Instruction(ins.kind, [ins.inputs[0], *rvs], ins.attrs, ins.outputs)
        insts.append(ins)
    return Trace(insts, decisions)


def knob_count(trace) -> int:
    """The number of knobs in a trace of :func:`knob_trace`."""
    return sum(ins.kind.name == "SamplePerfectTile" for ins in trace.insts)


def knob_space(task, target):
    """A MetaSchedule space generator for ``task``: :func:`knob_trace` (one design space, the default schedule);
    the tile-size mutator only (the other mutators change what the hand-written schedule fixes)."""
    from tvm.s_tir import meta_schedule as ms

    trace = knob_trace(task, target)

    def apply(sch):
        trace.apply_to_schedule(sch, remove_postproc=False)
        return sch

    return ms.space_generator.ScheduleFn(apply, sch_rules=[], postprocs=[],
                                         mutator_probs={ms.mutator.MutateTileSize(): 1.0})


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
