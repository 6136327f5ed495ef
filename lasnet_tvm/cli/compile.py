"""``lasnet-tvm compile`` and ``lasnet-tvm verify``."""

from __future__ import annotations

import re
from pathlib import Path

import click

from ..block_plan import Fusion
from .types import MASKER

# Target flags users write after --target, in TVM's old string syntax (e.g. -arch=sm_70).
_TARGET_FLAG = re.compile(r"^--?(arch|mtriple|mcpu|mattr|mabi|max_num_threads|num-cores)=\S+$")


class TargetFlagsCommand(click.Command):
    """Takes target flags (``-arch=sm_70``) out of the arguments before click parses them as options."""

    def parse_args(self, ctx, args):
        ctx.meta["target_flags"] = [a for a in args if _TARGET_FLAG.match(a)]
        return super().parse_args(ctx, [a for a in args if not _TARGET_FLAG.match(a)])


def _target_text(target: str | None, extra: list[str], device: str | None):
    """The target a user asked for: ``--target`` plus bare flags after it (``-arch=sm_70``), or a profile's."""
    from ..errors import LasnetError

    if device is not None:
        if target is not None:
            raise LasnetError("give --target or --device, not both")
        from ..predictor import get_profile

        return get_profile(device).target
    if extra and target is None:
        raise LasnetError(f"{' '.join(extra)} is a target flag: give the target before it, e.g. "
                          f"--target cuda {' '.join(extra)}")
    return " ".join([target or "llvm", *extra])


def compile_options(f):
    """The options of ``compile`` that choose what to build and for which target (shared with ``bundle``)."""
    options = [
        click.option("--target", default=None, help="llvm (default), 'cuda -arch=sm_70', a JSON dict or a TVM tag; "
                     "flags may follow as separate words: --target cuda -arch=sm_70."),
        click.option("--device", default=None,
                     help="Take the target from this hardware profile (see `lasnet-tvm devices`)."),
        click.option("--fusion", type=click.Choice(Fusion.values()), default=Fusion.ALL.value, show_default=True,
                     help="Fusion level of the dynamic blocks (paper Table 1)."),
        click.option("--no-fuse", is_flag=True, help="Same as --fusion none."),
        click.option("--static", is_flag=True, help="Compile the static counterpart (dense blocks) instead."),
        click.option("--schedules", type=click.Path(path_type=Path), default=None,
                     help="Tuned schedules (a `lasnet-tvm tune` work dir); default: the shipped schedules of --device, "
                     "or of the llvm target's CPU (schedules/<LLVM CPU name>), when present."),
        click.option("--default-schedules", is_flag=True, help="Ignore shipped tuned schedules: default schedules only."),
        click.option("--params", type=click.Choice(["auto", "embed", "separate"]), default="auto", show_default=True,
                     help="Weights inside the library (embed) or beside it as MODEL.params.npz (separate); auto: "
                     "separate above 8 MiB of weights."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def resolve_compile_options(ctx, target, device, fusion, no_fuse, static, schedules, default_schedules,
                            params) -> dict:
    """The :func:`compile_options` as keyword arguments of :func:`lasnet_tvm.compiler.compile_checkpoint`."""
    from ..tuning import schedules_for

    text = _target_text(target, ctx.meta["target_flags"], device)
    return {"target": text, "fusion": Fusion.NONE if no_fuse else fusion, "static": static, "params": params,
            "database": schedules_for(schedules, device, text, not default_schedules)}


@click.command(cls=TargetFlagsCommand)
@click.argument("model_path", metavar="MODEL.pt", type=click.Path(path_type=Path))
@compile_options
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Shared library to write.")
@click.option("--dump-ir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write the module (TVMScript) after import and after each compiler pass into this folder: "
              "00_import.py, 01_legalize_ops.py, ...")
@click.option("--granularity", type=click.Choice(["checkpoint", "auto"]), default="checkpoint", show_default=True,
              help="auto: S per stage chosen by the latency predictor for --device's profile (else this machine's, "
              "'local'), at --rate; the predicted ms of every option goes into the manifest.")
@click.option("--masker", type=MASKER, default="fused", show_default=True,
              help="Masker placement of every dynamic block: fused into conv1 (conv1 dense), or separate (the masker "
              "first, conv1 only on the active patches' windows; needs --fusion all); auto: per block, the one the "
              "predictor (as for --granularity auto) prices lower at --rate; the predicted ms of each option go "
              "into the manifest.")
@click.option("--rate", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="Activation rate the predictor assumes for --granularity auto and --masker auto.")
@click.pass_context
def compile_cmd(ctx, model_path, output, dump_ir, granularity, masker, rate, **options):
    """Compile MODEL.pt into a shared library (plus a JSON manifest beside it)."""
    from ..compiler import compile_checkpoint
    from ..compiler.artifact import manifest_path, params_path
    from ..fsutil import check_writable

    check_writable(output, "compiled library")
    check_writable(manifest_path(output), "manifest")
    chooser = None
    fusion = options["fusion"] if not options["no_fuse"] else "none"
    if granularity == "auto":
        from ..predictor.search import auto_granularity

        chooser = auto_granularity(options["device"], rate, fusion, masker=masker)  # priced as --masker places
    if masker == "auto":
        from ..predictor.search import auto_masker

        masker = auto_masker(options["device"], rate, fusion)
    result = compile_checkpoint(model_path, output=output, dump_ir=dump_ir, granularity=chooser, masker=masker,
                                **resolve_compile_options(ctx, **options))
    static = options["static"]
    m = result.manifest
    click.echo(f"wrote {output} ({m['arch']}, {m['target']['kind']}"
               f"{' ' + m['target'].get('arch', m['target'].get('mcpu', '')) if m['target']['kind'] != 'llvm' else ''}, "
               f"fusion {m['fusion']}{', static' if static else ''}) in {m['compile_seconds']:.1f} s")
    if "granularity_choice" in m:
        g = m["granularity_choice"]
        click.echo(f"granularity {g['chosen']} chosen by the predictor ({g['profile']}, rate {g['rate']}): "
                   f"{g['predicted_network_ms']:.2f} ms predicted; per-option ms in the manifest")
    if "masker_choice" in m:
        c = m["masker_choice"]
        n = sum(p == "separate" for p in c["chosen"])
        click.echo(f"masker placement chosen by the predictor ({c['profile']}, rate {c['rate']}): separate in {n} of "
                   f"{len(c['chosen'])} blocks; per-option ms in the manifest")
    if "params" in m:
        click.echo(f"weights beside it: {params_path(output)}")
    if "tuned_schedules" in m:
        t = m["tuned_schedules"]
        click.echo(f"tuned schedules from {t['dir']}: {len(t['applied'])} kernels/operators tuned, the rest default")


@click.command()
@click.argument("model_path", metavar="MODEL.pt", type=click.Path(path_type=Path))
@click.argument("library", metavar="MODEL.so", type=click.Path(path_type=Path))
@click.option("--samples", type=click.IntRange(min=1), default=4, show_default=True, help="Random inputs to compare on.")
@click.option("--seed", default=0, show_default=True)
def verify(model_path, library, samples, seed):
    """Run MODEL.pt (PyTorch) and MODEL.so on the same inputs; fail on any difference in logits or masks."""
    from ..compiler import verify_compiled
    from ..compiler.artifact import check_compiled_from

    check_compiled_from(library, model_path)
    report = verify_compiled(model_path, library, samples, seed)
    click.echo(report.summary())
    if not report.ok:
        raise click.exceptions.Exit(1)
