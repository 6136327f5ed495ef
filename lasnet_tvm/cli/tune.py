"""``lasnet-tvm tune``: MetaSchedule tuning of a network's kernels and static operators for one device."""

from __future__ import annotations

import time
from pathlib import Path

import click

from .types import COUNT, GRANULARITY, POSITIVE, FiniteFloat


@click.command()
@click.option("--device", required=True, help="Device to tune for: local (this CPU) or a profile name "
              "(see `lasnet-tvm devices`).")
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="Take the blocks from this model.pt.")
@click.option("--arch", default=None, help="Or from an arch (e.g. las_resnet50) ...")
@click.option("-g", "--granularity", type=GRANULARITY, default=None, help="... and granularity (e.g. 4-4-2-1).")
@click.option("--input-size", type=COUNT, default=224, show_default=True)
@click.option("--width-mult", type=POSITIVE, default=1.0, show_default=True)
@click.option("--num-classes", type=COUNT, default=1000, show_default=True, help="Classifier width (with --arch).")
@click.option("--rate", type=FiniteFloat(0.0, 1.0, min_open=True), default=0.5, show_default=True,
              help="Expected activation rate: patch-wise kernels are tuned at P = rate * g*g.")
@click.option("--trials", type=click.IntRange(min=0), default=64, show_default=True, help="Measured trials in total, shared across tasks.")
@click.option("--work-dir", type=click.Path(path_type=Path), default=None,
              help="Database folder (default schedules/<device>; for local: schedules/<this CPU's LLVM name>).")
@click.option("--tracker", default=None, help="HOST:PORT of a TVM RPC tracker to measure on a board.")
@click.option("--key", default=None, help="Key of the board's RPC server at the tracker.")
@click.option("--no-measure", is_flag=True, help="No hardware: record default schedules, marked unmeasured.")
@click.option("--timeout", type=POSITIVE, default=120.0, show_default=True, help="Seconds per build / run before it is killed.")
@click.option("--stage", type=int, default=None,
              help="Tune only the kernels of this stage's blocks (no stem, pooling or classifier).")
@click.option("--per-iter", type=COUNT, default=None,
              help="Candidates measured per search round (default: a quarter of a task's share, 8 to 32).")
@click.option("--export", "export_dir", type=click.Path(path_type=Path), default=None,
              help="Then write only the chosen schedules and the manifest to this folder (what ships under "
              "schedules/<name>/).")
@click.option("--offline", "offline_dir", type=click.Path(path_type=Path), default=None,
              help="Air-gapped: build the candidates into this folder for `python DIR/measure.py` on the device.")
@click.option("--max-candidates", type=COUNT, default=8, show_default=True,
              help="--offline: candidates per task, the default schedule included.")
@click.option("--from", "from_results", type=click.Path(path_type=Path), default=None,
              help="--offline: a second round, around the winners of this results.json.")
@click.option("--python", default=None, help="--offline: the device's Python version X.Y (default this one).")
@click.option("--import", "import_results", type=click.Path(path_type=Path), default=None,
              help="Commit the winners of an offline folder's results.json to the database.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Write the per-task timings, machine, versions and git revision as JSON.")
def tune(device, model_path, arch, granularity, input_size, width_mult, num_classes, rate, trials, work_dir,
         tracker, key, no_measure, timeout, stage, per_iter, offline_dir, max_candidates, from_results, python,
         import_results, export_dir, json_path):
    """Tune the kernels of a LAS network (and of its static counterpart, and its stem, pooling and
    classifier) for DEVICE with MetaSchedule; each task then keeps the faster of its tuned and default
    schedules. `compile --schedules DIR` applies the result.

    Air-gapped devices: `--offline DIR` builds the candidates, `python DIR/measure.py` times them there,
    `--import DIR/results.json` commits the winners (see docs/tuning.md)."""
    from ..errors import LasnetError
    from ..tuning import device_dir_name, device_target, static_op_tasks, summary_table, tasks_of_block, tasks_of_spec
    from ..tuning import tune as run_tune

    from ..fsutil import check_dir_writable, check_writable

    if json_path is not None:
        check_writable(json_path, "report")
    for folder, what in ((work_dir, "tuning database"), (export_dir, "exported schedules")):
        if folder is not None:
            check_dir_writable(folder, what)
    if import_results is not None:
        from ..tuning.offline_import import import_results as do_import

        if offline_dir is not None:
            raise LasnetError("give --offline DIR or --import RESULTS, not both")
        s = do_import(import_results, device, work_dir)
        click.echo(f"imported {len(s['imported'])} tuned schedules into {s['work_dir']} "
                   f"({len(s['default'])} tasks keep the default, {len(s['failed'])} had no correct candidate)")
        for name in s["imported"]:
            click.echo(f"  {name}")
        return
    if (model_path is None) == (arch is None):
        raise LasnetError("give --model MODEL.pt, or --arch A --granularity G")
    if model_path is not None:
        from ..checkpoint import load_checkpoint

        model, _ = load_checkpoint(model_path)
        source = str(model_path)
    else:
        from ..models import build_model

        if granularity is None:
            raise LasnetError("--arch needs --granularity")
        model = build_model(arch, granularity, input_size, num_classes, width_mult)
        source = f"{arch} {granularity} {input_size} x{width_mult} {num_classes} classes"
    blocks = [b for b in model.spec.blocks if stage is None or b.stage == stage]
    if stage is None:
        tasks = tasks_of_spec(model.spec, rate) + static_op_tasks(model, device_target(device).target)
    else:
        if not blocks:
            raise LasnetError(f"--stage {stage}: {model.spec.arch} has stages "
                              f"{sorted({b.stage for b in model.spec.blocks})}")
        tasks = list({t.key: t for b in blocks for t in tasks_of_block(b, rate, static=True)}.values())
        source += f" stage {stage}"
    if offline_dir is not None:
        from ..tuning.offline import build_offline

        m = build_offline(tasks, device, offline_dir, max_candidates, from_results, python=python, echo=click.echo)
        n = sum(len(t["candidates"]) for t in m["tasks"])
        click.echo(f"round {m['round']}: {n} candidates of {len(tasks)} tasks in {offline_dir} (id {m['id']}); "
                   f"on the device: python {offline_dir}/measure.py, then tune --device {device} --import "
                   f"{offline_dir}/results.json")
        return
    if from_results is not None:
        raise LasnetError("--from needs --offline DIR")
    from ..predictor import get_profile
    from ..tuning.priority import task_priorities

    priorities = task_priorities(model.spec, blocks, tasks, get_profile(device), rate)
    click.echo(f"{len(tasks)} tasks for {device} ({source}), {trials} trials")
    t0 = time.perf_counter()
    manifest = run_tune(tasks, device, work_dir, trials, tracker, key, no_measure, timeout, source=source,
                        per_iter=per_iter, priorities=priorities)
    seconds = time.perf_counter() - t0
    click.echo(summary_table(manifest, tasks))
    where = work_dir or Path("schedules") / device_dir_name(device)
    what = "default schedules recorded (unmeasured)" if no_measure else "tuned"
    click.echo(f"{what} in {seconds:.0f} s into {where}")
    if export_dir is not None:
        from ..tuning.database import export_chosen

        export_chosen(where, export_dir)
        n = sum(e.get("chosen") == "tuned" for e in manifest.get("tasks", []))
        click.echo(f"exported {n} tuned schedules (the other tasks keep their default) to {export_dir}")
    if json_path is not None:
        from ..records import provenance, write_json
        from ..tuning.report import tuning_report

        write_json(json_path, {**tuning_report(manifest, tasks, seconds), "source": source, **provenance()})
        click.echo(f"report: {json_path}")
