"""``lasnet-tvm inspect``: a static report of a compiled CUDA library (no GPU needed)."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.argument("library", metavar="MODEL.so", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def inspect(library, as_json):
    """Report the device code of MODEL.so (from `lasnet-tvm compile --target cuda ...`): cubin, PTX or CUDA
    source, and per kernel its grid and block as functions of the patch count P, registers, shared memory,
    spills (ptxas) and outputs per thread."""
    from ..compiler.inspect import format_report, inspect_library

    report = inspect_library(library)
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))
