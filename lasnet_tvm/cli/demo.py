"""``lasnet-tvm demo``: train (or take) a small LAS model, compile it for this CPU, run it, print its speedup."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="Use this model.pt instead of training the demo model.")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("lasnet-demo"), show_default=True,
              help="Where the demo model is written (and reused by later runs).")
@click.option("--images", default=8, show_default=True, help="Synthetic images to run and time.")
@click.option("--repeats", default=5, show_default=True, help="Timed runs per image.")
def demo(model_path, workdir, images, repeats):
    """Train a small LAS-ResNet-50 on synthetic shapes (a few minutes), compile it and its static counterpart
    for this CPU, check the compiled model against PyTorch, and print the measured speedups."""
    from ..demo import run_demo, train_demo_model

    if model_path is None:
        model_path = workdir / "demo_model.pt"
        if model_path.exists():
            click.echo(f"reusing {model_path} (delete it to train again)")
        else:
            click.echo(f"training the demo model into {model_path} ...")
            train_demo_model(model_path)
    click.echo("compiling the LAS model and its static counterpart for this CPU ...")
    result = run_demo(model_path, images, repeats)
    click.echo(result.summary())
