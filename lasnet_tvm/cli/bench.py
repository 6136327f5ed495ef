"""``lasnet-tvm bench``: benchmarks (``block`` here; later issues add more sub-commands)."""

from __future__ import annotations

import os

import click

from ..errors import LasnetError


@click.group()
def bench():
    """Benchmarks of compiled LAS blocks and models."""


def _ints(text: str | None, what: str, n: int | None = None):
    if text is None:
        return None
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise LasnetError(f"{what} {text!r}: expected comma-separated integers") from None
    if n is not None and len(vals) != n:
        raise LasnetError(f"{what} {text!r}: expected {n} values")
    return tuple(vals)


@bench.command("block")
@click.option("--arch", default="las_resnet50", show_default=True, help="Backbone whose block is measured.")
@click.option("--stage", default=1, show_default=True, type=int, help="Stage (1..4); its first identity block.")
@click.option("--channels", default=None, help="Explicit C_in,C_mid,C_out (overrides --arch/--stage).")
@click.option("--size", default=None, type=int, help="Input feature size with --channels.")
@click.option("--stride", default=1, show_default=True, type=int, help="Stride with --channels.")
@click.option("--S", "S", default=4, show_default=True, type=int, help="Mask granularity.")
@click.option("--rates", default="0.25,0.5,0.75,1.0", show_default=True, help="Activation rates.")
@click.option("--ablation-rate", default=0.6, show_default=True, type=float, help="Rate of the fusion ablation.")
@click.option("--repeats", default=50, show_default=True, type=int, help="Timed rounds per variant.")
@click.option("--threads", default=2, show_default=True, type=int, help="torch and TVM threads.")
@click.option("--target", default="llvm", show_default=True, help="TVM target (CPU only for now).")
@click.option("--out", "out", default=None, type=click.Path(dir_okay=False), help="JSON result file.")
def block(arch, stage, channels, size, stride, S, rates, ablation_rate, repeats, threads, target, out):
    """Static vs dynamic LAS block (TVM and PyTorch) and the fusion ablation (paper Table 1)."""
    os.environ.setdefault("TVM_NUM_THREADS", str(threads))
    from ..benchmarks import block as B
    from ..benchmarks.common import write_json

    try:
        rate_list = tuple(float(r) for r in rates.split(",") if r.strip())
    except ValueError:
        raise LasnetError(f"--rates {rates!r}: expected comma-separated numbers") from None
    if not rate_list or any(not 0 <= r <= 1 for r in rate_list) or not 0 <= ablation_rate <= 1:
        raise LasnetError("rates must lie in [0, 1]")
    if repeats < 1:
        raise LasnetError(f"--repeats must be >= 1, got {repeats}")
    spec = B.block_spec(arch, stage, _ints(channels, "--channels", 3), size, stride, S)
    res = B.run(spec, rate_list, repeats, ablation_rate, target, threads, log=lambda m: click.echo(m, err=True))
    click.echo(B.format_table(res))
    if out:
        write_json(out, res)
        click.echo(f"wrote {out}")


@bench.command("model")
@click.option("--model", "model_path", default=None, help="A model.pt; default: random weights at --rate.")
@click.option("--arch", default="las_resnet50", show_default=True)
@click.option("--granularity", "-g", default="4-4-2-1", show_default=True)
@click.option("--input-size", default=224, show_default=True)
@click.option("--width-mult", default=1.0, show_default=True)
@click.option("--rate", default=0.5, show_default=True, help="Activation rate the random model's maskers aim at.")
@click.option("--images", default=4, show_default=True, help="Synthetic images (timings are per image).")
@click.option("--repeats", default=5, show_default=True)
@click.option("--threads", default=2, show_default=True)
@click.option("--out", type=click.Path(), required=True, help="JSON file to write.")
def model(model_path, arch, granularity, input_size, width_mult, rate, images, repeats, threads, out):
    """Whole network: compiled LAS vs compiled static vs PyTorch (static, LAS dense, sparse)."""
    from ..benchmarks import common
    from ..benchmarks import model as bm

    os.environ.setdefault("TVM_NUM_THREADS", str(threads))
    net = None
    if model_path is not None:
        from ..checkpoint import load_checkpoint

        net, _ = load_checkpoint(model_path)
    res = bm.run(arch, granularity, input_size, width_mult, rate, net, images, repeats, threads)
    for k, err in res["max_rel_err"].items():
        if err > 1e-4:
            raise LasnetError(f"compiled {k} model differs from PyTorch (max relative error {err:.1e})")
    common.write_json(out, res)
    click.echo(bm.format_table(res))
    click.echo(f"wrote {out}")
