"""``lasnet-tvm tune``: MetaSchedule tuning of a network's LAS kernels for one device."""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.command()
@click.option("--device", required=True, help="Device to tune for: local (this CPU) or a profile name "
              "(see `lasnet-tvm devices`).")
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="Take the blocks from this model.pt.")
@click.option("--arch", default=None, help="Or from an arch (e.g. las_resnet50) ...")
@click.option("--granularity", default=None, help="... and granularity (e.g. 4-4-2-1).")
@click.option("--input-size", default=224, show_default=True)
@click.option("--width-mult", default=1.0, show_default=True)
@click.option("--rate", default=0.5, show_default=True,
              help="Expected activation rate: patch-wise kernels are tuned at P = rate * g*g.")
@click.option("--trials", default=64, show_default=True, help="Measured trials in total, shared across tasks.")
@click.option("--work-dir", type=click.Path(path_type=Path), default=None,
              help="Database folder (default schedules/<device>).")
@click.option("--tracker", default=None, help="HOST:PORT of a TVM RPC tracker to measure on a board.")
@click.option("--key", default=None, help="Key of the board's RPC server at the tracker.")
@click.option("--no-measure", is_flag=True, help="No hardware: record default schedules, marked unmeasured.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds per build / run before it is killed.")
def tune(device, model_path, arch, granularity, input_size, width_mult, rate, trials, work_dir, tracker, key,
         no_measure, timeout):
    """Tune the kernels of a LAS network for DEVICE with MetaSchedule; results go to schedules/<device>/."""
    from ..errors import LasnetError
    from ..tuning import summary_table, tasks_of_spec
    from ..tuning import tune as run_tune

    if (model_path is None) == (arch is None):
        raise LasnetError("give --model MODEL.pt, or --arch A --granularity G")
    if not 0 < rate <= 1:
        raise LasnetError(f"--rate must be in (0, 1], got {rate}")
    if model_path is not None:
        from ..checkpoint import load_checkpoint

        model, _ = load_checkpoint(model_path)
        spec, source = model.spec, str(model_path)
    else:
        from ..archs import arch_spec

        if granularity is None:
            raise LasnetError("--arch needs --granularity")
        spec = arch_spec(arch, granularity, input_size, width_mult=width_mult)
        source = f"{arch} {granularity} {input_size} x{width_mult}"
    tasks = tasks_of_spec(spec, rate)
    click.echo(f"{len(tasks)} tasks for {device} ({source}), {trials} trials")
    t0 = time.perf_counter()
    manifest = run_tune(tasks, device, work_dir, trials, tracker, key, no_measure, timeout, source=source)
    click.echo(summary_table(manifest, tasks))
    where = work_dir or Path("schedules") / device
    what = "default schedules recorded (unmeasured)" if no_measure else "tuned"
    click.echo(f"{what} in {time.perf_counter() - t0:.0f} s into {where}")
