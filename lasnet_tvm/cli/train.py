"""``lasnet-tvm train``: train a LAS model with the paper's objective (a thin wrapper of :func:`train`)."""

from __future__ import annotations

import click

from ..archs import ARCHS
from .types import COUNT, GRANULARITY, NON_NEGATIVE, POSITIVE, RATE


@click.command()
@click.option("--arch", type=click.Choice(ARCHS), default="las_resnet50", show_default=True)
@click.option("--granularity", "-S", type=GRANULARITY, default="4-4-2-1", show_default=True, help="S per stage (or per block).")
@click.option("--input-size", type=COUNT, default=224, show_default=True, help="Input side in pixels.")
@click.option("--width-mult", type=POSITIVE, default=1.0, show_default=True, help="Channel multiplier.")
@click.option("--num-classes", type=COUNT, default=None,
              help="Classes (synthetic, clutter: default 10; pairs: 4; folders: inferred).")
@click.option("--data", default="synthetic", show_default=True,
              help="'synthetic', 'clutter' (shapes on clutter), 'pairs' (two discs classed by their arrangement), "
                   "or an image folder (train/ and val/ inside, or class folders split by seed).")
@click.option("--train-size", type=COUNT, default=2000, show_default=True, help="Synthetic training images.")
@click.option("--val-size", type=COUNT, default=500, show_default=True, help="Synthetic validation images.")
@click.option("--epochs", type=COUNT, default=10, show_default=True)
@click.option("--static-epochs", type=click.IntRange(min=0), default=0, show_default=True,
              help="First train the static model (maskers off) this many epochs; it then becomes the teacher.")
@click.option("--batch-size", type=COUNT, default=64, show_default=True)
@click.option("--lr", type=POSITIVE, default=0.1, show_default=True, help="Backbone learning rate (cosine decay).")
@click.option("--weight-decay", type=NON_NEGATIVE, default=1e-4, show_default=True)
@click.option("--masker-lr-mult", type=POSITIVE, default=10.0, show_default=True,
              help="Masker learning rate relative to the backbone.")
@click.option("--target", type=RATE, default=0.5, show_default=True, help="FLOPs target t.")
@click.option("--alpha", type=NON_NEGATIVE, default=10.0, show_default=True, help="Weight of the FLOPs and bounds losses.")
@click.option("--beta", type=NON_NEGATIVE, default=0.5, show_default=True, help="Weight of distillation from the static teacher.")
@click.option("--kd-temperature", type=POSITIVE, default=4.0, show_default=True)
@click.option("--init", type=click.Path(dir_okay=False), default=None,
              help="torchvision-format ResNet/RegNet state_dict to start from.")
@click.option("--resume", is_flag=True, help="Continue from <output>.state after its last finished epoch.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=COUNT, default=None, help="CPU threads (default: all cores).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("-o", "--output", default="model.pt", show_default=True, help="Where to write the model.")
def train(**opts):
    """Train a LAS model: CE + alpha * (FLOPs + bounds losses) + beta * T^2 * KD from the static teacher."""
    from ..fsutil import check_writable
    from ..train.trainer import TrainConfig, state_path_for
    from ..train.trainer import train as run_training

    progress = not opts.pop("no_progress")
    cfg = TrainConfig(**opts, progress=progress)
    check_writable(cfg.output, "model")
    check_writable(state_path_for(cfg.output), "training state")
    if cfg.init is None and cfg.static_epochs == 0 and cfg.beta and not cfg.resume:
        click.echo("note: no --init and no --static-epochs: the teacher is the untrained initial model", err=True)
    r = run_training(cfg)
    if r.resumed_from is not None:
        click.echo(f"resumed after epoch {r.resumed_from}")
    if r.init_missing:
        click.echo(f"init: {len(r.init_missing)} weight(s) not in {cfg.init}: {', '.join(r.init_missing[:5])}"
                   + (" ..." if len(r.init_missing) > 5 else ""))
    if r.init_unexpected:
        click.echo(f"init: {len(r.init_unexpected)} unused weight(s) in {cfg.init}: {', '.join(r.init_unexpected[:5])}"
                   + (" ..." if len(r.init_unexpected) > 5 else ""))
    for h in r.history:
        click.echo(f"epoch {h['epoch']:3d}  loss {h['train_loss']:.3f}  train acc {h['train_accuracy']:.3f}  "
                   f"val acc {h['val_accuracy']:.3f}  rate {h['val_rate']:.3f}  flops {h['val_flops_ratio']:.3f}")
    click.echo(f"wrote {r.output} (state: {r.state_path})")
    click.echo(f"accuracy {r.accuracy:.4f}  activation rate {r.rate:.3f} (target {cfg.target})  "
               f"FLOPs ratio {r.flops_ratio:.3f}  time {r.wall_s:.0f} s")
