"""Tests of ``lasnet_tvm.tuning`` (``lasnet-tvm tune``): tasks, database safety, replay, tuning, RPC.

The fast tests build tuning records without measuring (MetaSchedule design spaces); tests that measure are
``slow`` (on the shared 2-core dev machine one measured batch of 8 candidates takes minutes).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from _rpc import free_port, localhost_board

tvm = pytest.importorskip("tvm")

from lasnet_tvm.archs import BlockSpec  # noqa: E402
from lasnet_tvm.errors import LasnetError  # noqa: E402
from lasnet_tvm.tuning import TunedSchedules, tasks_of_block, tune  # noqa: E402
from lasnet_tvm.tuning.database import (REPLAY_VARIANTS, WorkDirLock, apply_trace, check_database_files,  # noqa: E402
                                        export_chosen, read_manifest, write_manifest)
from lasnet_tvm.tuning.tasks import IndexArgAllocator, Task, allocator_layouts, fill_arguments  # noqa: E402

BLOCK = BlockSpec(name="b", stage=1, index=0, c_in=32, c_mid=16, c_out=32, stride=1, groups=1, se_channels=0,
                  in_size=16, out_size=16, S=4)  # g = 4: 16 patches
GC = dict(C=16, H=16, W=16, S=4, stride=1, groups=1, padded=True)


def packed_w(w):
    """``[C_in, 3, 3, C_out]`` weights of :func:`gather_conv_ref` in the padded gather-conv's packed layout."""
    from lasnet_tvm.kernels.shapes import pack_weight_3x3

    return pack_weight_3x3(np.transpose(w, (3, 0, 1, 2)))


def gather_conv_ref(f1, idx, w, b, S=4, g=4):
    """numpy reference of gather_conv3x3(padded=True, stride 1, groups 1), weights ``[C_in, 3, 3, C_out]``."""
    out = np.zeros((len(idx), w.shape[3], S, S), np.float64)
    for i, q in enumerate(idx):
        r0, c0 = (q // g) * S, (q % g) * S
        for y in range(S):
            for x in range(S):
                out[i, :, y, x] = np.einsum("ckl,cklo->o", f1[:, r0 + y:r0 + y + 3, c0 + x:c0 + x + 3], w) + b
    return np.maximum(out, 0)


def design_space_traces(task, target):
    """MetaSchedule's sketches of ``task`` (traces with sampled tiles, no measurement)."""
    from tvm.s_tir import meta_schedule as ms

    from lasnet_tvm.tuning.database import workload_mod

    ctx = ms.TuneContext(mod=workload_mod(task.func()), target=target, space_generator="post-order-apply",
                         search_strategy="replay-trace", num_threads=1)
    return [s.trace for s in ctx.space_generator.generate_design_space(ctx.mod)]


@pytest.fixture(scope="module")
def target():
    from lasnet_tvm.tuning import device_target

    return device_target("local").target


def test_tasks_of_block_specialize_and_indices():
    tasks = {t.kernel: t for t in tasks_of_block(BLOCK, rate=0.5)}
    # no downsample, S = 4: conv3 adds its patches into the block input in its epilogue, as compile builds it
    assert set(tasks) == {"masker_conv1x1", "gather_conv3x3", "patch_conv1x1"} and tasks["patch_conv1x1"].params["Ho"]
    gc = tasks["gather_conv3x3"]
    assert (gc.P, gc.num_patches, gc.index_args) == (8, 16, ("idx",))
    assert tasks["masker_conv1x1"].P is None
    assert [int(s) for s in gc.func().params[1].shape] == [8]
    assert tasks_of_block(BLOCK, rate=0.01)[1].P == 1  # at least one patch
    layouts = allocator_layouts(list(tasks.values()))
    args_info = [["TENSOR", str(p.dtype), [int(s) for s in p.shape]] for p in gc.func().params]
    idx = fill_arguments(args_info, layouts)[1]
    assert idx.dtype == np.int32 and list(idx) == sorted(set(idx.tolist())) and idx.max() < 16 and len(idx) == 8
    t = IndexArgAllocator(layouts)(tvm.cpu(), args_info, 2)
    assert len(t) == 2 and np.array_equal(t[0][1].numpy(), idx)


@pytest.mark.parametrize("fusion", ["none", "masker", "all"])
def test_tasks_follow_the_kernels_symbolic_patch_count(fusion):
    """A task is specialized exactly where its kernel has the symbolic patch count, and its index argument is
    the kernel's ``idx`` (what MetaSchedule searches is each kernel's own function, nothing declared beside it)."""
    from lasnet_tvm import kernels as K
    from lasnet_tvm.tuning.tasks import symbolic_vars

    tasks = tasks_of_block(BLOCK, fusion=fusion, static=True)
    for t in tasks:
        func = K.builder(t.kernel)(**t.params)
        assert (t.P is not None) == bool(symbolic_vars(func)), t.kernel
        assert t.index_args == (("idx",) if t.P is not None and "idx" in [p.name for p in func.params] else ())
    assert {t.kernel for t in tasks if t.index_args} == ({"gather_conv3x3", "patch_conv1x1"} if fusion == "all"
                                                         else {"gather", "scatter"})
    assert {t.kernel for t in tasks if t.P is not None and not t.index_args} == (
        set() if fusion == "all" else {"window_conv3x3", "patch_conv1x1"})


def test_unknown_device_and_missing_hardware(tmp_path):
    with pytest.raises(LasnetError, match="unknown device"):
        tune([], "no-such-board", tmp_path)
    with pytest.raises(LasnetError, match="--no-measure"):
        tune([], "tx2", tmp_path)


def test_tracker_not_answering_is_one_line_error(tmp_path):
    port = free_port()  # closed again: nothing listens there
    t0 = time.time()
    with pytest.raises(LasnetError, match="does not answer"):
        tune(tasks_of_block(BLOCK)[:1], "local", tmp_path, trials=4, tracker=f"127.0.0.1:{port}", key="k")
    assert time.time() - t0 < 30


def test_corrupt_database_is_reported_and_kept(tmp_path):
    good = tmp_path / "database_workload.json"
    good.write_text('["a", 1]\n{broken\n["b", 2]\n')
    before = good.read_bytes()
    with pytest.raises(LasnetError, match="line 2"):
        check_database_files(tmp_path, repair_tail=True)
    assert good.read_bytes() == before
    with pytest.raises(LasnetError, match="corrupt"):
        TunedSchedules(tmp_path)


def test_interrupted_last_line_is_dropped_not_the_records(tmp_path):
    f = tmp_path / "database_tuning_record.json"
    f.write_text('[0, [1]]\n[0, [2]]\n[0, [3')
    with pytest.raises(LasnetError, match="incomplete"):
        check_database_files(tmp_path)
    check_database_files(tmp_path, repair_tail=True)
    assert f.read_text() == '[0, [1]]\n[0, [2]]\n'


def test_lock_excludes_a_second_process(tmp_path):
    code = ("import sys; from lasnet_tvm.tuning.database import WorkDirLock\n"
            "try:\n    WorkDirLock(sys.argv[1]).__enter__()\nexcept Exception as e:\n    print(e); sys.exit(3)\n")
    with WorkDirLock(tmp_path):
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 3 and "another process" in r.stdout
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0


def test_symbolic_replay_matches_numpy(target):
    """Tuned-at-P=8 sketches replayed onto the symbolic kernel compute the reference for P = 1 .. 16."""
    from lasnet_tvm import kernels as K

    task = Task("gather_conv3x3", GC, 8, 16, ("idx",))
    sym = K.builder("gather_conv3x3")(**GC)
    checked, traces = 0, design_space_traces(task, target)
    for trace in traces:
        for variant in REPLAY_VARIANTS:  # as compile replays a record: the first variant that builds
            try:
                ex = tvm.compile(apply_trace(trace, sym, variant), target=target)
                break
            except Exception:  # noqa: BLE001 - the next variant
                continue
        else:
            continue
        for P in (1, 5, 8, 16):
            rng = np.random.default_rng(P)
            f1 = rng.standard_normal((16, 18, 18)).astype("float32")
            idx = np.sort(rng.choice(16, P, replace=False)).astype("int32")
            w = rng.standard_normal((16, 3, 3, 16)).astype("float32")
            b = rng.standard_normal(16).astype("float32")
            out = tvm.runtime.empty((P, 16, 4, 4), "float32")
            ex["main_p"](*[tvm.runtime.tensor(a) for a in (f1, idx, packed_w(w), b)], out)
            np.testing.assert_allclose(out.numpy(), gather_conv_ref(f1, idx, w, b), rtol=1e-4, atol=1e-4)
        checked += 1
    assert checked == len(traces) >= 1  # every sketch replays onto the symbolic kernel in one of the variants


def test_no_measure_records_defaults_and_query(tmp_path, target):
    """--no-measure writes one unmeasured record per task; query_schedule applies it (numerically right)."""
    tasks = [t for t in tasks_of_block(BLOCK) if t.kernel == "gather_conv3x3"]
    m = tune(tasks, "local", tmp_path, no_measure=True, progress=False)
    assert m["measured"] is False and m["tasks"][0]["chosen"] == "unmeasured" and m["tasks"][0].get("tuned_ms") is None
    from lasnet_tvm import kernels as K

    params = dict(tasks[0].params)
    db = TunedSchedules(tmp_path)
    func = K.builder("gather_conv3x3")(**params)
    got = db.query_schedule("gather_conv3x3", params, func, target)
    assert got is not None
    assert db.query_schedule("gather_conv3x3", {**params, "C": 8}, func, target) is None
    ex = tvm.compile(got, target=target)
    rng = np.random.default_rng(0)
    f1 = rng.standard_normal((16, 18, 18)).astype("float32")
    idx = np.array([0, 3, 9, 15], "int32")
    w, b = rng.standard_normal((16, 3, 3, 16)).astype("float32"), rng.standard_normal(16).astype("float32")
    out = tvm.runtime.empty((4, 16, 4, 4), "float32")
    ex["main_p"](*[tvm.runtime.tensor(a) for a in (f1, idx, packed_w(w), b)], out)
    np.testing.assert_allclose(out.numpy(), gather_conv_ref(f1, idx, w, b), rtol=1e-4, atol=1e-4)
    # a second --no-measure run adds nothing
    n = len((tmp_path / "database_tuning_record.json").read_text().splitlines())
    tune(tasks, "local", tmp_path, no_measure=True, progress=False)
    assert len((tmp_path / "database_tuning_record.json").read_text().splitlines()) == n
    write_manifest(tmp_path, {**m, "device": "other"})
    with pytest.raises(LasnetError, match="holds schedules of"):
        tune(tasks, "local", tmp_path, no_measure=True, progress=False)


def test_cli_errors_are_one_line(tmp_path):
    from click.testing import CliRunner

    from lasnet_tvm.cli.main import cli

    r = CliRunner().invoke(cli, ["tune", "--device", "nope", "--arch", "las_resnet50", "--granularity", "4",
                                 "--work-dir", str(tmp_path)])
    assert r.exit_code != 0 and "unknown device" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["tune", "--device", "local"])
    assert r.exit_code != 0 and "--model" in r.output
    r = CliRunner().invoke(cli, ["tune", "--device", "local", "--arch", "las_resnet50", "--granularity", "4",
                                 "--stage", "9", "--no-measure", "--work-dir", str(tmp_path)])
    assert r.exit_code != 0 and "--stage 9" in r.output and "Traceback" not in r.output


def test_cli_stage_and_json_report(tmp_path):
    """--stage keeps only that stage's kernels (LAS and static); --json writes one row per task."""
    import json

    from click.testing import CliRunner

    from lasnet_tvm.cli.main import cli
    from lasnet_tvm.models import build_model

    args = ["tune", "--device", "local", "--arch", "las_resnet50", "--granularity", "4-4-2-1", "--width-mult",
            "0.25", "--input-size", "64", "--stage", "2", "--no-measure", "--work-dir", str(tmp_path / "db"),
            "--json", str(tmp_path / "r.json")]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "r.json").read_text())
    spec = build_model("las_resnet50", "4-4-2-1", 64, 1000, 0.25).spec
    blocks = [b for b in spec.blocks if b.stage == 2]
    want = {t.key for b in blocks for t in tasks_of_block(b, static=True)}
    assert {t["task"] for t in rep["tasks"]} == {t.name for b in blocks for t in tasks_of_block(b, static=True)}
    assert len(rep["tasks"]) == len(want)
    assert all(t["chosen"] == "unmeasured" for t in rep["tasks"]) and rep["total_ms"]["default"] is None
    # the predictor's priority of every task: its calls in the two networks and their predicted time
    assert all(t["calls"] >= 1 and t["predicted_ms"] > 0 and t["searched"] is False for t in rep["tasks"])
    # --export: the chosen records (none, unmeasured) and the manifest; never onto the work dir itself
    r = CliRunner().invoke(cli, args + ["--export", str(tmp_path / "ship")])
    assert r.exit_code == 0, r.output
    assert read_manifest(tmp_path / "ship")["tasks"] == read_manifest(tmp_path / "db")["tasks"]
    assert _lines(tmp_path / "ship" / "database_tuning_record.json") == []
    r = CliRunner().invoke(cli, args + ["--export", str(tmp_path / "db")])
    assert r.exit_code != 0 and "onto itself" in r.output and _lines(tmp_path / "db" / "database_tuning_record.json")
    assert rep["versions"]["tvm"] and "cpu" in rep["machine"]


# ---------------------------------------------------------------- measured tuning (slow) ----------------

GC_TASK = Task("gather_conv3x3", GC, 8, 16, ("idx",))

COMPARE = r"""
import json, sys
import numpy as np, tvm
from lasnet_tvm import kernels as K
from lasnet_tvm.tuning import TunedSchedules, device_target
params = json.loads(sys.argv[2])
target = device_target("local").target
sym = K.builder("gather_conv3x3")(**params)
ts = TunedSchedules(sys.argv[1])
tuned = ts.query_schedule("gather_conv3x3", params, sym, target)
if tuned is None:  # the default schedule won the post-search check: replay the best record itself
    from lasnet_tvm.tuning.database import apply_trace, ranked_records
    from lasnet_tvm.tuning.tasks import Task
    (e,) = ts.entries.values()
    assert e["chosen"] == "default", e
    rec = ranked_records(ts.db, Task(e["kernel"], e["params"], e["P"], e["num_patches"]))[0]
    for variant in ("tiled", "unit"):
        try:
            tuned = apply_trace(rec.trace, sym, variant)
            tvm.compile(tuned, target=target)
            break
        except Exception:
            tuned = None
assert tuned is not None, "no tuned schedule applies"
exs = {"tuned": tvm.compile(tuned, target=target), "unscheduled": tvm.compile(sym, target=target)}
rng = np.random.default_rng(0)
P = 8
args = [rng.standard_normal((16, 18, 18)).astype("float32"), (np.arange(P) * 2).astype("int32"),
        rng.standard_normal((1, 16, 3, 3, 16)).astype("float32"), rng.standard_normal(16).astype("float32")]  # packed
outs, times = {}, {k: [] for k in exs}
for k, ex in exs.items():
    o = tvm.runtime.empty((P, 16, 4, 4), "float32")
    ex["main_p"](*[tvm.runtime.tensor(a) for a in args], o)
    outs[k] = o.numpy()
for _ in range(5):  # interleaved: both see the same load on the shared machine
    for k, ex in exs.items():
        o = tvm.runtime.empty((P, 16, 4, 4), "float32")
        f = ex.mod.time_evaluator("main_p", tvm.cpu(), number=20, repeat=1)
        times[k].append(f(*[tvm.runtime.tensor(a) for a in args], o).mean)
print(json.dumps({"max_diff": float(np.abs(outs["tuned"] - outs["unscheduled"]).max()),
                  "tuned_ms": 1e3 * float(np.median(times["tuned"])),
                  "unscheduled_ms": 1e3 * float(np.median(times["unscheduled"]))}))
"""


def _lines(path):
    return path.read_bytes().splitlines(keepends=True) if path.exists() else []


def test_record_ids_survive_and_trials_go_to_the_task_ranked_first(tmp_path):
    """The record ids the manifest names (taken from the search, in memory) are those of the records read
    back from disk, so that compile finds the chosen record (fresh traces hold IntImm decisions). With trials
    for one search round, the task of larger predicted time is searched and the other keeps its default schedule
    unsearched; the manifest says which and why."""
    from lasnet_tvm.tuning.database import open_database, ranked_records, trace_id
    from lasnet_tvm.tuning.priority import Priority

    small = tasks_of_block(BLOCK)[0]
    assert small.key != GC_TASK.key
    pr = {GC_TASK.key: Priority(2, 1.0), small.key: Priority(1, 0.01)}
    m = tune([small, GC_TASK], "local", tmp_path, trials=8, per_iter=8, progress=False, priorities=pr)
    db = open_database(tmp_path)
    by_key = {e["key"]: e for e in m["tasks"]}
    ids = [trace_id(r.trace) for r in ranked_records(db, GC_TASK) if r.run_secs]
    cands = by_key[GC_TASK.key]["candidates"]  # in rank order; the default schedule's own record is no candidate
    assert cands and [i for i in ids if i in cands] == cands
    assert by_key[GC_TASK.key]["searched"] and not by_key[small.key]["searched"]
    assert (by_key[GC_TASK.key]["calls"], by_key[GC_TASK.key]["predicted_ms"]) == (2, 1.0)
    assert len([r for r in ranked_records(db, small) if r.run_secs]) <= 1  # its default only
    assert by_key[small.key]["chosen"] == "default" and not by_key[small.key].get("candidates")


@pytest.mark.slow
def test_tune_locally_resume_and_reload_faster(tmp_path):
    """Tune the gather-conv kernel (8 trials), resume (8 more: earlier records kept byte for byte), reload
    the database in a fresh process: the tuned kernel matches and beats the unscheduled function that
    MetaSchedule starts from (our hand-written default schedule is already good, so it is not the baseline)."""
    from lasnet_tvm.tuning.database import open_database, ranked_records

    def best_search_s():  # the fastest record's mean measured time in the database
        return min(float(np.mean([float(t) for t in r.run_secs]))
                   for r in ranked_records(open_database(tmp_path), GC_TASK) if r.run_secs)

    m = tune([GC_TASK], "local", tmp_path, trials=8, progress=False)
    rec_file = tmp_path / "database_tuning_record.json"
    first, best1 = _lines(rec_file), best_search_s()
    assert len(first) >= 1 and m["tasks"][0]["tuned_ms"] is not None and m["tasks"][0]["untuned_ms"] is not None
    m2 = tune([GC_TASK], "local", tmp_path, trials=8, progress=False)
    again = _lines(rec_file)
    assert again[:len(first)] == first and len(again) > len(first)
    assert m2["trials"] > m["trials"] > 0 and best_search_s() <= best1  # resuming never loses the best record
    # what ships under schedules/<name>: only the chosen records, with the manifest
    export_chosen(tmp_path, tmp_path / "ship")
    n_tuned = sum(e.get("chosen") == "tuned" for e in m2["tasks"])
    assert len(_lines(tmp_path / "ship" / "database_tuning_record.json")) == n_tuned
    assert read_manifest(tmp_path / "ship")["tasks"] == m2["tasks"]
    r = subprocess.run([sys.executable, "-c", COMPARE, str(tmp_path), json.dumps(GC)], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    print(res)
    assert res["max_diff"] < 1e-4
    assert res["tuned_ms"] < 0.7 * res["unscheduled_ms"], res


@pytest.mark.slow
def test_tune_over_localhost_rpc(tmp_path):
    """A tracker and a server started here stand in for a board: trials are measured through RPC."""
    pytest.importorskip("tornado")

    with localhost_board("testboard") as tracker:
        with pytest.raises(LasnetError, match="no free board"):
            tune([GC_TASK], "local", tmp_path / "x", trials=4, tracker=tracker, key="otherkey")
        m = tune([GC_TASK], "local", tmp_path, trials=8, tracker=tracker, key="testboard", progress=False)
        assert m["tasks"][0]["tuned_ms"] is not None and m["tasks"][0]["untuned_ms"] is not None
        assert len(_lines(tmp_path / "database_tuning_record.json")) >= 1


@pytest.mark.slow
def test_compile_with_tuned_schedules_matches_pytorch(tmp_path):
    """compile_model(database=TunedSchedules) on a small LAS-ResNet: schedules from the database (design
    space sketches recorded for the patch-wise kernels) give the PyTorch logits and masks."""
    import torch
    from model_utils import randomize_
    from tvm.s_tir import meta_schedule as ms

    from lasnet_tvm.archs import arch_spec
    from lasnet_tvm.compiler import CompiledModel, build_target, compile_model
    from lasnet_tvm.models import build_model
    from lasnet_tvm.tuning import device_target, tasks_of_spec
    from lasnet_tvm.tuning.database import workload_mod

    model = randomize_(build_model("las_resnet50", "4-4-2-1", 64, 7, 0.25), seed=0, masker_bias=0.5, force=True)
    tasks = tasks_of_spec(arch_spec("las_resnet50", "4-4-2-1", 64, width_mult=0.25))
    tune(tasks, "local", tmp_path, no_measure=True, progress=False)
    target = device_target("local").target
    db = ms.database.JSONDatabase(work_dir=str(tmp_path))
    n = 0
    for t in tasks:  # a MetaSchedule sketch, ranked first (measured), for every gather-conv task
        if t.kernel != "gather_conv3x3":
            continue
        trace = design_space_traces(t, target)[0]
        wl = db.commit_workload(workload_mod(t.func()))
        db.commit_tuning_record(ms.database.TuningRecord(trace, wl, [1e-6], target,
                                                         ms.arg_info.ArgInfo.from_prim_func(t.func())))
        n += 1
    assert n >= 1
    result = compile_model(model, build_target("llvm"), "all", False, TunedSchedules(tmp_path))
    compiled = CompiledModel.from_executable(result.executable, result.manifest)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        logits, stats = model(torch.from_numpy(x), return_stats=True)
    got = compiled.run(x)
    np.testing.assert_allclose(got.logits, logits.numpy(), rtol=1e-4, atol=1e-4 * np.abs(logits.numpy()).max())
    for block, m in zip(model.blocks, stats["masks"]):
        np.testing.assert_array_equal(got.masks[block.spec.name], m[:, 0].bool().numpy())
