"""``lasnet-tvm devices --tracker HOST:PORT``: the boards a real TVM RPC tracker (started here) has."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from _rpc import free_port, localhost_board
from lasnet_tvm.cli.main import cli

KEY = "devicesboard"


@pytest.fixture(scope="module")
def tracker():
    """``HOST:PORT`` of a localhost tracker with one RPC server registered as :data:`KEY`; both stop after."""
    with localhost_board(KEY) as addr:
        yield addr


def test_devices_lists_tracker_boards(tracker):
    res = CliRunner().invoke(cli, ["devices", "--tracker", tracker, "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert [r["key"] for r in rows] == [KEY]
    assert rows[0]["free"] == 1 and rows[0]["pending"] == 0
    assert len(rows[0]["servers"]) == 1 and rows[0]["servers"][0].rsplit(":", 1)[1].isdigit()

    res = CliRunner().invoke(cli, ["devices", "--tracker", tracker])
    assert res.exit_code == 0, res.output
    header, line = res.output.splitlines()
    assert header.split()[:4] == ["key", "servers", "free", "pending"]
    assert line.split()[:4] == [KEY, "1", "1", "0"]


@pytest.mark.parametrize("addr, words", [(None, "does not answer"), ("nohost", "expected HOST:PORT")])
def test_devices_tracker_errors_in_one_line(addr, words):
    addr = addr or f"127.0.0.1:{free_port()}"  # nothing listens there
    res = CliRunner().invoke(cli, ["devices", "--tracker", addr])
    assert res.exit_code == 1
    assert words in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert "Traceback" not in res.output
