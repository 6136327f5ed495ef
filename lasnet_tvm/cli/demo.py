"""``lasnet-tvm demo``: train (or take) a small LAS model, compile it for this CPU, check it, draw its masks and
print its speedup."""

from __future__ import annotations

from pathlib import Path

import click

from .types import COUNT


@click.command()
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="Use this model.pt instead of training the demo model.")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("lasnet-demo"), show_default=True,
              help="Where the demo model, masks.png and demo.json are written (the model is reused by later runs).")
@click.option("--images", type=COUNT, default=8, show_default=True, help="Held-out images per timed pass.")
@click.option("--repeats", type=COUNT, default=30, show_default=True, help="Timed passes (interleaved: LAS, static, PyTorch).")
@click.option("--held-out", type=COUNT, default=200, show_default=True,
              help="Held-out images on which accuracy and the match with PyTorch are checked.")
def demo(model_path, workdir, images, repeats, held_out):
    """Train a small LAS-ResNet on pairs of discs on clutter (about a minute on 2 cores), compile it and its static
    counterpart for this CPU, check the compiled model against PyTorch on held-out images, draw its masks
    (WORKDIR/masks.png) and print the measured speedups (also in WORKDIR/demo.json)."""
    from ..demo import run_demo, train_demo_model
    from ..fsutil import check_writable

    for name in ("demo.json", "masks.png") + (() if model_path else ("demo_model.pt",)):
        check_writable(workdir / name, name)
    train_s = None
    if model_path is None:
        model_path = workdir / "demo_model.pt"
        if model_path.exists():
            click.echo(f"reusing {model_path} (delete it to train again)")
        else:
            click.echo(f"training the demo model into {model_path} ...")
            r = train_demo_model(model_path)
            train_s = r.wall_s
            click.echo(f"trained in {r.wall_s:.0f} s: held-out accuracy {r.accuracy:.3f}, rate {r.rate:.2f}")
    click.echo("compiling the LAS model and its static counterpart for this CPU, checking and timing them ...")
    result = run_demo(model_path, images, repeats, held_out, workdir=workdir, train_s=train_s)
    click.echo(result.summary())
    click.echo(f"wrote {workdir / 'demo.json'}")
