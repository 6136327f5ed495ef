"""Offline (air-gapped) tuning, step 1: build every task's candidate schedules into a folder to carry to a device.

``lasnet-tvm tune --device NAME --offline DIR`` writes::

    offline.json          the manifest: id, device, target, versions, tasks, candidates (trace, library, sha256)
    measure.py            the measuring script (numpy + the runtime-only TVM below; see its docstring)
    python/               tvm (runtime only), tvm_ffi, typing_extensions (as in a bundle, :mod:`..deploy.runtime`)
    tasks/NN_NAME/        per task: c0.so (the default schedule), c1.so ... (candidates), check_P.npz (inputs
                          and the reference outputs at patch count P, computed here with TVM's unscheduled function)

Each candidate is what ``compile`` would use: the schedule replayed onto the kernel with a symbolic patch count
(:func:`.database.apply_trace`), built for the device's target. Round one samples MetaSchedule's design spaces
(``ReplayTrace``: random decisions, postprocessors applied); a later round (``from_results``) starts from the
fastest correct candidates of a measured round and adds their neighbours (MetaSchedule's mutators applied to the
winning traces). Step 2 is ``python DIR/measure.py`` on the device, step 3 :mod:`.offline_import`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import LasnetError
from .offline_files import (
    DEFAULT_ID,
    FORMAT,
    MANIFEST,
    load_results,
    target_json,
    trace_from_json,
)

MEASURE_SCRIPT = Path(__file__).with_name("offline_measure.py")


@dataclass
class Candidate:
    """One schedule of a task: ``trace`` None for the default schedule."""

    id: str
    origin: str  # "default", "sampled", "winner" (of the earlier round) or "neighbour"
    trace: object = None  # tvm.s_tir.schedule.Trace on the task's workload (specialized at P)
    variant: str | None = None
    func: object = field(default=None, repr=False)  # the symbolic function under this schedule


def _sym_at(task, func, P):
    from .tasks import specialize

    return specialize(func, P) if (P is not None and task.P is not None) else func


def _check_sizes(task) -> list:
    """Patch counts each candidate is checked at (the tuning size P, where it is timed, first)."""
    if task.P is None:
        return [None]
    return [task.P] + sorted({1, task.num_patches} - {task.P})


def _build(func, target):
    import tvm

    return tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target)


def _write_checks(task, sym, folder: Path, seed: int) -> list:
    """Inputs and reference outputs (every argument after the call) of TVM's unscheduled ``sym``, built for this
    CPU, at each size of :func:`_check_sizes`; one ``check_<P>.npz`` each."""
    import tvm
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    from .tasks import args_signature, fill_arguments

    ref = _build(sym, tvm.target.Target("llvm"))
    checks = []
    for k, P in enumerate(_check_sizes(task)):
        at = _sym_at(task, sym, P)
        info = [a.as_json() for a in ArgInfo.from_prim_func(at)]
        layout = {i: task.num_patches for i, p in enumerate(at.params) if p.name in task.index_args}
        args = fill_arguments(info, {args_signature(info): layout}, seed + k)
        tensors = [tvm.runtime.tensor(a) for a in args]
        ref["main"](*tensors)
        name = f"check_{'all' if P is None else P}.npz"
        np.savez(folder / name, **{f"arg{i}": a for i, a in enumerate(args)},
                 **{f"ref{i}": t.numpy() for i, t in enumerate(tensors)})
        checks.append({"P": P, "file": name, "args": len(args)})
    return checks


def _tune_context(task, target, seed: int):
    from tvm.s_tir import meta_schedule as ms

    from .database import workload_mod

    return ms.TuneContext(mod=workload_mod(task.func()), target=target, space_generator="post-order-apply",
                          search_strategy=ms.search_strategy.ReplayTrace(), task_name=task.name, num_threads=1,
                          rand_state=seed)


def sampled_traces(task, target, n: int, seed: int) -> list:
    """Up to ``n`` distinct traces sampled from MetaSchedule's design spaces of ``task`` (random decisions,
    postprocessors applied)."""
    from .database import trace_id

    if n <= 0:
        return []
    ctx = _tune_context(task, target, seed)
    spaces = ctx.generate_design_space()
    ctx.pre_tuning(max_trials=2 * n, num_trials_per_iter=2 * n, design_spaces=spaces, database=None, cost_model=None)
    try:
        cands = ctx.generate_measure_candidates() or []
    finally:
        ctx.post_tuning()
    out = {}
    for c in cands:
        out.setdefault(trace_id(c.sch.trace), c.sch.trace)
    return list(out.values())[:n]


def neighbour_traces(task, target, traces: list, n: int, seed: int) -> list:
    """Up to ``n`` distinct traces one MetaSchedule mutation away from ``traces`` (the mutators and
    probabilities of the target's default search; postprocessors applied)."""
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    from .database import trace_id

    if n <= 0 or not traces:
        return []
    ctx = _tune_context(task, target, seed)
    gen = ctx.space_generator
    mutators = {m: float(p) for m, p in gen.mutator_probs.items()}
    rng = np.random.default_rng(seed)
    seen = {trace_id(t) for t in traces}
    out, misses = [], dict.fromkeys(mutators, 0)
    for attempt in range(20 * n):
        if len(out) >= n or not mutators:
            break
        base = traces[attempt % len(traces)]
        names = list(mutators)
        probs = np.array([mutators[m] for m in names])
        mutator = names[rng.choice(len(names), p=probs / probs.sum())]
        # MutatorApply with a seed (Mutator.apply draws one at random): the same neighbours on every build
        new = ms._ffi_api.MutatorApply(mutator, base.simplified(remove_postproc=True), int(rng.integers(1, 2**30)))
        if new is None:  # nothing this mutator can change (e.g. no tile sizes): after 3 misses, stop asking it
            misses[mutator] += 1
            if misses[mutator] >= 3:
                del mutators[mutator]
            continue
        sch = s_tir.Schedule(ctx.mod, seed=int(rng.integers(1, 2**30)))
        try:
            new.apply_to_schedule(sch, remove_postproc=True)
            if not all(p.apply(sch) for p in gen.postprocs):
                continue
        except Exception:  # noqa: BLE001 - a mutation that does not replay is skipped
            continue
        tid = trace_id(sch.trace)
        if tid not in seen:
            seen.add(tid)
            out.append(sch.trace)
    return out


def _replayed(task, sym, trace, target, origin: str):
    """The candidate of ``trace`` on the symbolic kernel (first variant that builds), or None."""
    from .database import REPLAY_VARIANTS, apply_trace, trace_id
    from .tasks import symbolic_vars

    for variant in (REPLAY_VARIANTS if symbolic_vars(sym) else REPLAY_VARIANTS[:1]):
        try:
            f = apply_trace(trace, sym, variant)
            ex = _build(f, target)
        except Exception:  # noqa: BLE001 - try the next variant, else leave the trace out
            continue
        return Candidate(trace_id(trace), origin, trace, variant, f), ex
    return None


def _earlier_winners(previous: dict | None, task, k: int) -> list:
    """Traces of the ``k`` fastest correct non-default candidates of ``task`` in a measured round."""
    if previous is None:
        return []
    results, manifest = previous
    entry = next((e for e in manifest["tasks"] if e["key"] == task.key), None)
    timed = results["tasks"].get(task.key, {}).get("candidates", [])
    ok = sorted((c["median_ms"], c["id"]) for c in timed if c.get("correct") and c.get("median_ms") is not None)
    if entry is None:
        return []
    by_id = {c["id"]: c for c in entry["candidates"]}
    return [trace_from_json(task, by_id[i]["trace"]) for _, i in ok if i != DEFAULT_ID and i in by_id][:k]


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_output(output: Path) -> None:
    if output.exists() and (not output.is_dir() or (any(output.iterdir()) and not (output / MANIFEST).is_file())):
        raise LasnetError(f"{output}: exists and is not an offline tuning folder (no {MANIFEST}); "
                          f"choose a new or empty folder")


def build_offline(tasks: list, device: str, output, max_candidates: int = 8, from_results=None, top_k: int = 2,
                  python: str | None = None, seed: int = 0, progress: bool = True, echo=print) -> dict:
    """Build the candidates of ``tasks`` for ``device`` into the folder ``output``; return its manifest.

    ``max_candidates`` counts per task, the default schedule included. ``from_results`` (a ``results.json`` of
    an earlier round) makes a second round: the ``top_k`` fastest correct candidates of each task there, and
    neighbours of them. The folder is built beside ``output`` and renamed into place at the end (an earlier
    offline folder there is replaced; a failure leaves it as it was).

    Raises
    ------
    LasnetError
        Unknown device, a bad ``output`` or ``from_results``, ``max_candidates`` below 1.
    """
    from tqdm import tqdm

    from .. import __version__
    from ..deploy.bundle import _replace
    from ..deploy.runtime import copy_runtime, parse_python
    from ..fsutil import check_dir_writable
    from .database import workload_hash, workload_mod
    from .select import default_schedule, symbolic_func
    from .tune import device_target

    if max_candidates < 1:
        raise LasnetError(f"--max-candidates must be at least 1 (the default schedule), got {max_candidates}")
    dt = device_target(device)
    python = parse_python(python)
    previous = load_results(from_results, device) if from_results is not None else None
    output = Path(output)
    _check_output(output)
    check_dir_writable(output.parent, "offline folder")
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    tmp.chmod(0o755)
    try:
        versions = copy_runtime(tmp / "python", python)
        round_ = 1 if previous is None else int(previous[1].get("round", 1)) + 1
        seed = seed + 1000 * (round_ - 1)
        plans = []
        for i, t in enumerate(tqdm(tasks, desc="sampling", unit="task", disable=not progress)):
            winners = _earlier_winners(previous, t, top_k)
            n = max(0, max_candidates - 1 - len(winners))
            near = neighbour_traces(t, dt.target, winners, n, seed + i)
            # where the winners have fewer neighbours (no decision a mutator can change): fresh samples
            far = sampled_traces(t, dt.target, n - len(near), seed + i) if len(near) < n else []
            plans.append((t, [(w, "winner") for w in winners] + [(x, "neighbour") for x in near]
                          + [(x, "sampled") for x in far]))
        total = sum(1 + len(p[1]) for p in plans)
        t0 = time.perf_counter()
        probe = _build(default_schedule(tasks[0], symbolic_func(tasks[0]), dt.target), dt.target) if tasks else None
        if probe is not None:
            probe.export_library(str(tmp / "probe.so"))
            (tmp / "probe.so").unlink()
        per = time.perf_counter() - t0
        echo(f"{len(tasks)} tasks, {total} candidates for {device} ({dt.target.kind.name}): about "
             f"{per * (total + len(tasks)):.0f} s to build ({per:.1f} s per library here)")
        entries = []
        bar = tqdm(total=total, desc="building", unit="candidate", disable=not progress)
        for i, (t, traces) in enumerate(plans):
            folder = tmp / "tasks" / f"{i:02d}_{t.name}"
            folder.mkdir(parents=True)
            sym = symbolic_func(t)
            checks = _write_checks(t, sym, folder, seed + i)
            built = [(Candidate(DEFAULT_ID, "default", None, None, default_schedule(t, sym, dt.target)),
                      probe if i == 0 else None)]
            for trace, origin in traces:
                got = _replayed(t, sym, trace, dt.target, origin)
                if got is not None and all(c.id != got[0].id for c, _ in built):
                    built.append(got)
                bar.update(1)
            cands = []
            for j, (c, ex) in enumerate(built):
                lib = folder / f"c{j}.so"
                (ex or _build(c.func, dt.target)).export_library(str(lib))
                cands.append({"id": c.id, "origin": c.origin, "variant": c.variant, "file": lib.name,
                              "sha256": _file_sha(lib),
                              "trace": None if c.trace is None else _trace_json(c.trace)})
            bar.update(1)
            (folder / "workload.json").write_text(_save_json(t.func()))
            entries.append({**t.to_json(), "index_args": list(t.index_args), "dir": f"tasks/{folder.name}",
                            "workload": workload_hash(workload_mod(t.func())), "checks": checks,
                            "candidates": cands})
        bar.close()
        shutil.copy2(MEASURE_SCRIPT, tmp / "measure.py")
        body = {"format": FORMAT, "device": device, "target": target_json(dt.target), "kind": dt.target.kind.name,
                "round": round_, "from": None if previous is None else previous[1]["id"], "python": python,
                "lasnet_tvm": __version__, **versions,
                "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "tasks": entries}
        manifest = {"id": hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16], **body}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        _replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _save_json(obj) -> str:
    import tvm

    return tvm.ir.save_json(obj)


def _trace_json(trace):
    from .database import _plain

    return _plain(trace.as_json(remove_postproc=False))


