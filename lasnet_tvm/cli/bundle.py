"""``lasnet-tvm bundle``: a compiled model with a runtime-only TVM and ``run.py``, in one folder to carry."""

from __future__ import annotations

from pathlib import Path

import click

from .compile import TargetFlagsCommand, compile_options, resolve_compile_options


@click.command(cls=TargetFlagsCommand)
@click.argument("model_path", metavar="MODEL.pt", type=click.Path(path_type=Path))
@compile_options
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Bundle folder to write (new, empty, or an earlier bundle, which is replaced).")
@click.option("--python", "python", default=None, metavar="X.Y",
              help="Python version on the target (default: this one); its tvm_ffi wheel is fetched with pip.")
@click.option("--torch", "torch_models", is_flag=True,
              help="Also carry the PyTorch model and its static counterpart (torch.export), so that `run.py "
              "--bench` times PyTorch and checks the logits where torch is installed.")
@click.option("--no-weights", is_flag=True,
              help="Leave the weights out: the target draws random ones (same shapes and statistics, from --seed); "
              "for timing only, the bundle stays small.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random weights with --no-weights.")
@click.pass_context
def bundle(ctx, model_path, output, python, torch_models, no_weights, seed, **options):
    """Compile MODEL.pt into a folder that runs with only numpy: `python DIR/run.py --input x.npy -o y.npy`,
    or `python DIR/run.py --bench` (timings as JSON)."""
    from ..deploy import build_bundle

    b = build_bundle(model_path, output, python=python, torch_models=torch_models, no_weights=no_weights, seed=seed,
                     **resolve_compile_options(ctx, **options))
    m = b.manifest
    click.echo(f"wrote {output} ({m['arch']}, {m['target']['kind']}, Python {b.info['python']}, "
               f"TVM {b.info['tvm']} runtime only{', no weights' if no_weights else ''}): "
               f"{b.size_bytes / 2**20:.1f} MiB")
