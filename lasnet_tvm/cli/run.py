"""``lasnet-tvm run``: a model on a float32 array, writing logits (and optionally masks)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(path_type=Path))
@click.option("--input", "input_path", type=click.Path(path_type=Path), required=True,
              help="Images, a .npy of shape [N >= 1, 3, H, W]: float32 (float16/float64 are rounded to float32; "
              "integer arrays and NaN or infinite values are refused).")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="logits .npy to write.")
@click.option("--masks", "masks_path", type=click.Path(path_type=Path), default=None,
              help="Also write each block's coarse mask to this .npz.")
def run(model_path, input_path, output, masks_path):
    """Run MODEL (a model.pt, or a library from `lasnet-tvm compile`) on an input array; write float32 logits.

    Logits are [N, classes]; --masks writes each block's coarse mask and the per-block activation rates.
    A .pt and a compiled library check the input alike; the outputs are written only once all are computed,
    each atomically.
    """
    from ..fsutil import check_writable
    from ..runner import load_input, run_model, save_outputs

    check_writable(output, "logits")
    if masks_path is not None:
        check_writable(masks_path, "masks")
    result = run_model(model_path, load_input(input_path))
    save_outputs(result, output, masks_path)
    rates = result.rates.mean(axis=0)
    click.echo(f"wrote {output}: logits {tuple(result.logits.shape)}, mean activation rate {rates.mean():.3f}")
