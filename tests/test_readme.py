"""Every ``lasnet-tvm`` command line in README.md parses: the command exists and takes those options."""

import re
import shlex
from pathlib import Path

import click
import pytest

from lasnet_tvm.cli.main import cli

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    lines = []
    for block in blocks:
        for line in block.splitlines():
            for part in line.split("# ")[0].split(";"):
                part = re.sub(r"\[[^\]]*\]", "", part).strip()  # [--optional] placeholders
                part = part.split("&&")[-1].strip()
                if part.startswith("lasnet-tvm "):
                    lines.append(part)
    return lines


def test_readme_has_commands():
    cmds = readme_commands()
    assert len(cmds) >= 15 and any(c.startswith("lasnet-tvm demo") for c in cmds)


@pytest.mark.parametrize("line", readme_commands())
def test_readme_command_parses(line):
    args = shlex.split(line)[1:]
    group, ctx = cli, click.Context(cli)
    while isinstance(group, click.Group):
        name, args = args[0], args[1:]
        cmd = group.get_command(ctx, name)
        assert cmd is not None, f"no command {name!r} in: {line}"
        group = cmd
    group.make_context(name, args)  # raises on an unknown option or a missing required one
