"""The README and docs/ stay true to the code: every ``lasnet-tvm`` command line in their bash blocks parses (the
command exists and takes those options), every ``python -m tvm.exec.*`` line uses flags TVM has, the README's two
opening commands are what ``.ci/run`` runs, the README is short, and neither speaks of development history."""

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from lasnet_tvm.cli.main import cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
TEXTS = [README, *DOCS]
README_MAX_BYTES = 6500
HISTORY = re.compile(r"(?i:session \d|issue #?\d|later issues?|previously)|\bSession")


def bash_lines(path: Path) -> list[str]:
    """Command lines of the bash blocks of ``path``: comments dropped, ``;``-separated commands split."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), re.S):
        for line in block.splitlines():
            lines += [part.strip() for part in line.split("# ")[0].split(";") if part.strip()]
    return lines


def commands(prefix: str, paths=TEXTS) -> list[str]:
    """The command lines starting with ``prefix`` (after any ``A && B &&`` chain), ``[--optional]`` removed."""
    out = []
    for path in paths:
        for line in bash_lines(path):
            part = re.sub(r"\[[^\]]*\]", "", line).split("&&")[-1].strip()
            part = re.sub(r"^(\w+=\S*\s+)+", "", part)  # VAR=value prefixes
            if part.startswith(prefix):
                out.append(part)
    return out


def test_docs_have_commands():
    assert DOCS, "no docs/*.md"
    cmds = commands("lasnet-tvm ")
    assert len(cmds) >= 50 and any(c.startswith("lasnet-tvm demo") for c in commands("lasnet-tvm ", [README]))
    for name in ("design", "results", "hardware-profiles", "tuning"):
        assert ROOT / "docs" / f"{name}.md" in DOCS


@pytest.mark.parametrize("line", commands("lasnet-tvm "))
def test_command_parses(line):
    args = shlex.split(line)[1:]
    group, ctx = cli, click.Context(cli)
    while isinstance(group, click.Group):
        name, args = args[0], args[1:]
        cmd = group.get_command(ctx, name)
        assert cmd is not None, f"no command {name!r} in: {line}"
        group = cmd
    group.make_context(name, args)  # raises on an unknown option or a missing required one


@functools.cache
def _tvm_help(module: str) -> str:
    res = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.mark.parametrize("line", commands("python -m tvm.exec."))
def test_tvm_rpc_command_flags_exist(line):
    words = shlex.split(line)
    flags = [w.split("=")[0] for w in words[3:] if w.startswith("--")]
    assert flags, line
    helptext = _tvm_help(words[2])
    for flag in flags:
        assert re.search(rf"{flag}\b", helptext), f"{words[2]} has no {flag}: {line}"


def test_readme_is_short():
    assert len(README.read_bytes()) <= README_MAX_BYTES


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: p.name)
def test_no_development_history(path):
    found = [m.group(0) for m in HISTORY.finditer(path.read_text())]
    assert not found, f"{path.name} speaks of development history: {found}"


def test_readme_opening_commands_are_what_ci_runs():
    """The first two bash blocks of the README are the demo and the test command; .ci/run runs both verbatim."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)[:2]
    opening = [[ln for ln in b.splitlines() if ln.strip() and not ln.startswith("#")] for b in blocks]
    assert all(len(lines) == 1 for lines in opening), opening
    demo, tests = opening[0][0], opening[1][0]
    assert demo.endswith("lasnet-tvm demo") and tests.endswith("pytest")
    ci = [shlex.split(ln)[1] for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln.startswith("readme ")]
    assert sorted(ci) == sorted([demo, tests])
    assert all(cmd.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install ") for cmd in ci)
