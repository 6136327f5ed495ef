"""``lasnet-tvm convert`` and ``lasnet-tvm masks``."""

from __future__ import annotations

from pathlib import Path

import click

from ..archs import ARCHS, format_granularity
from .types import COUNT, GRANULARITY


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--arch", type=click.Choice(ARCHS), required=True, help="Backbone of the official checkpoint.")
@click.option("--granularity", "-g", type=GRANULARITY, required=True, help="S per stage ('4-4-2-1') or per block ('4,4,...').")
@click.option("--input-size", type=COUNT, default=224, show_default=True, help="Input side the model was trained at.")
@click.option("--se-pool", type=click.Choice(["dense", "active"]), default=None,
              help="RegNetY squeeze-excitation pooling [default: dense, the official semantics].")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="model.pt to write.")
def convert(checkpoint, arch, granularity, input_size, se_pool, output):
    """Convert a checkpoint of the official LASNet code into a lasnet-tvm model.pt."""
    from ..checkpoint import convert_official, save_checkpoint
    from ..fsutil import check_writable

    check_writable(output, "model")
    model = convert_official(checkpoint, arch, granularity, input_size, se_pool)
    save_checkpoint(output, model, {"converted_from": str(checkpoint)})
    s = model.spec
    depths = [sum(1 for b in s.blocks if b.stage == k) for k in range(1, 5)]
    click.echo(
        f"wrote {output}: {arch}, granularity {format_granularity(s.granularity, depths)}, "
        f"{s.num_classes} classes, width x{s.width_mult:g}, se_pool={model.se_pool}"
    )


@click.command()
@click.argument("model_path", metavar="MODEL.pt", type=click.Path(path_type=Path))
@click.argument("image", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default="masks.png", show_default=True)
def masks(model_path, image, output):
    """Draw every block's mask over IMAGE (the paper's Fig. 9)."""
    from ..checkpoint import load_checkpoint
    from ..fsutil import atomic_path, check_writable
    from ..visualize import load_image, plot_masks

    check_writable(output, "plot")
    model, _ = load_checkpoint(model_path)
    x, shown = load_image(image, model.spec.input_size)
    with atomic_path(output, "plot") as tmp:
        rates = plot_masks(model, x, shown, tmp)
    click.echo(f"wrote {output}: mean activation rate {sum(rates) / len(rates):.3f} over {len(rates)} blocks")
