"""Entry point of ``lasnet-tvm``. Sub-commands live in their own modules and are imported on demand."""

from __future__ import annotations

import importlib
import sys

import click

from .. import __version__
from ..errors import LasnetError

# command name -> "module:attribute"; each module holds one click command.
COMMANDS = {
    "train": "lasnet_tvm.cli.train:train",
    "convert": "lasnet_tvm.cli.checkpoint:convert",
    "masks": "lasnet_tvm.cli.checkpoint:masks",
    "run": "lasnet_tvm.cli.run:run",
    "predict": "lasnet_tvm.cli.predict:predict",
    "devices": "lasnet_tvm.cli.predict:devices",
    "profile-device": "lasnet_tvm.cli.predict:profile_device",
    "compile": "lasnet_tvm.cli.compile:compile_cmd",
    "bundle": "lasnet_tvm.cli.bundle:bundle",
    "inspect": "lasnet_tvm.cli.inspect:inspect",
    "verify": "lasnet_tvm.cli.compile:verify",
    "bench": "lasnet_tvm.cli.bench:bench",
    "demo": "lasnet_tvm.cli.demo:demo",
    "tune": "lasnet_tvm.cli.tune:tune",
    "calibrate": "lasnet_tvm.cli.calibrate:calibrate",
}


class LazyGroup(click.Group):
    """A group whose sub-commands are imported when used, and whose LasnetErrors print as one line."""

    def list_commands(self, ctx):
        return sorted(name for name in COMMANDS if self._load(name) is not None)

    def get_command(self, ctx, name):
        return self._load(name)

    @staticmethod
    def _load(name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as e:
            if e.name == module:  # command not written yet
                return None
            raise

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LasnetError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            raise click.ClickException("interrupted; files it was writing are left as they were") from None
        except OSError as e:  # the file system refused something not written through lasnet_tvm.fsutil
            where = f"{e.filename}: " if e.filename else ""
            raise click.ClickException(f"{where}{e.strerror or e}") from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """As click's, but a usage error is one line too (``Error: ...; see 'CMD --help'``, exit code 2)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:
            e.show()
            sys.exit(e.exit_code)
        except click.UsageError as e:
            where = f"; see '{e.ctx.command_path} --help'" if e.ctx is not None else ""
            click.echo(f"Error: {e.format_message().rstrip('.')}{where}", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Error: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lasnet-tvm")
def cli():
    """Compile latency-aware spatially dynamic CNNs (LASNet) with TVM and predict their latency."""


def main() -> None:
    cli()
