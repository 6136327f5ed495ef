"""The predictor's priorities for ``tune``: each task's calls and predicted time in the LAS and static networks,
and which tasks the trials reach (:mod:`lasnet_tvm.tuning.priority`)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from lasnet_tvm.archs import arch_spec
from lasnet_tvm.block_plan import block_plan
from lasnet_tvm.predictor import get_profile
from lasnet_tvm.predictor.kernel_ops import PATCH_KERNELS, predict_step
from lasnet_tvm.predictor.network import head_ops, stem_ops
from lasnet_tvm.predictor.ops import op_latency
from lasnet_tvm.tuning.priority import Priority, plan, task_priorities
from lasnet_tvm.tuning.static_ops import STATIC_KERNEL
from lasnet_tvm.tuning.tasks import task_key

SPEC = arch_spec("las_resnet50", "4-4-2-1")
HW = get_profile("v100")  # a shipped profile: no measurement of this machine


def _static_task(op):
    return SimpleNamespace(kernel=STATIC_KERNEL, params={"op": op}, key=f"{STATIC_KERNEL}:{op}")


def _kernel_tasks(spec):
    """The distinct kernels of both networks, as tasks (what ``tasks_of_spec`` gives, without building them)."""
    steps = [s for b in spec.blocks for s in block_plan(b, inplace_residual=True) + block_plan(b, static=True)]
    return list({task_key(s.kernel, s.params): SimpleNamespace(kernel=s.kernel, params=s.params,
                                                               key=task_key(s.kernel, s.params))
                 for s in steps}.values())


def test_priorities_count_every_call_of_both_networks():
    tasks = _kernel_tasks(SPEC)
    pr = task_priorities(SPEC, SPEC.blocks, tasks, HW, 0.5)
    n_steps = sum(len(block_plan(b, inplace_residual=True)) + len(block_plan(b, static=True)) for b in SPEC.blocks)
    assert set(pr) == {t.key for t in tasks} and sum(p.calls for p in pr.values()) == n_steps
    # a kernel of the static network only: its calls at P = 0, priced by the latency model
    b = SPEC.blocks[1]  # layer1.1
    st = next(s for s in block_plan(b, static=True) if s.kernel == "conv3x3")
    calls = sum(1 for b2 in SPEC.blocks for s in block_plan(b2, static=True) if task_key(s.kernel, s.params) ==
                task_key(st.kernel, st.params))
    assert calls == 3  # the three blocks of stage 1
    assert pr[task_key(st.kernel, st.params)] == Priority(3, pytest.approx(3 * predict_step(st, 0, HW) * 1e3))


def test_patch_kernels_weigh_more_at_higher_rates_dense_ones_not():
    tasks = _kernel_tasks(SPEC)
    low = task_priorities(SPEC, SPEC.blocks, tasks, HW, 0.25)
    high = task_priorities(SPEC, SPEC.blocks, tasks, HW, 0.75)
    for t in tasks:
        if t.kernel in PATCH_KERNELS:
            assert low[t.key].predicted_ms < high[t.key].predicted_ms, t.name
        elif t.kernel in ("conv3x3", "conv1x1"):
            assert low[t.key].predicted_ms == high[t.key].predicted_ms, t.name


def test_static_operators_are_priced_as_stem_and_head():
    ms = {o.name: op_latency(o, HW).total * 1e3 for o in stem_ops(SPEC) + head_ops(SPEC)}
    tasks = [_static_task(op) for op in ("conv2d", "max_pool2d", "adaptive_avg_pool2d", "matmul", "something")]
    pr = task_priorities(SPEC, [], tasks, HW, 0.5)
    assert [pr[t.key].predicted_ms for t in tasks[:4]] == pytest.approx(
        [2 * ms["stem_conv"], 2 * ms["stem_maxpool"], 2 * ms["avgpool"], 2 * ms["fc"]])  # both networks
    assert pr[tasks[4].key] == Priority(1, 0.0)  # not modelled: last in line


def test_plan_gives_the_trials_to_the_most_important_tasks():
    tasks = [SimpleNamespace(key=k, name=k) for k in "abcd"]
    pr = {"a": Priority(1, 0.5), "b": Priority(3, 4.0), "c": Priority(2, 2.0), "d": Priority(1, 0.1)}
    searched, weights = plan(tasks, pr, trials=16, per_iter=8)
    assert [t.key for t in searched] == ["b", "c"] and weights == [3.0, 2.0]
    searched, _ = plan(tasks, pr, trials=1000, per_iter=8)
    assert [t.key for t in searched] == ["b", "c", "a", "d"]
    assert [t.key for t in plan(tasks, pr, trials=4, per_iter=8)[0]] == ["b"]  # at least one
    assert plan(tasks, None, trials=8, per_iter=8) == (tasks, [1.0] * 4)  # no predictor: every task, weight 1
