"""``bench fusion|rate --tracker``: a TVM RPC tracker and server started here stand in for a board."""

from __future__ import annotations

import gc
import json
import time

import pytest
import torch
from click.testing import CliRunner

from _rpc import free_port, localhost_board, queue

KEY = "benchboard"
TINY = ["--quick", "--input-size", "48", "--repeats", "2", "--device", "xeon-6248"]


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """``(tracker, server log)`` of a localhost tracker with one RPC server registered as :data:`KEY`."""
    log = tmp_path_factory.mktemp("rpc") / "server.log"
    with localhost_board(KEY, log) as tracker:
        yield tracker, log


def _wait_free(tracker: str) -> None:
    """Wait until the board is free again (the last session has ended)."""
    gc.collect()
    deadline = time.time() + 30
    while int(queue(int(tracker.rsplit(":", 1)[1])).get(KEY, {}).get("free", 0)) < 1:
        assert time.time() < deadline, "the board was not freed after the last session"
        time.sleep(0.2)


def _invoke(board, args):
    """Run ``lasnet-tvm bench ARGS`` on the board."""
    from lasnet_tvm.cli.main import cli

    _wait_free(board[0])
    res = CliRunner().invoke(cli, ["bench", *args, "--tracker", board[0], "--key", KEY])
    gc.collect()
    return res


def _check_remote_header(data, board):
    tracker, log = board
    assert data["timing"] == f"remote kernel sums over RPC (tracker {tracker}, key {KEY})"
    assert KEY in data["device"] and "target llvm" in data["device"]
    assert data["threads"] is None and data["target_kind"] == "cpu"
    for key in ("benchmark", "target", "profile", "versions", "git_revision", "machine", "repeats",
                "kernel_repeat", "min_repeat_ms", "rates", "S", "max_rel_err", "note"):
        assert key in data, key
    assert data["kernel_repeat"] == 2
    assert "load_module" in log.read_text()  # the kernels were loaded by the server


def _check_timed(row):
    """A variant's block time is the sum of its kernel medians, all measured on the board."""
    assert row["kernels"]
    for k in row["kernels"]:
        assert k["measured_ms"] > 0 and k["predicted_ms"] > 0 and k["spread"]["n"] == 2
    total = sum(k["measured_ms"] for k in row["kernels"])
    assert row["measured_ms"] == pytest.approx(total) and row["measured_kernel_sum_ms"] == pytest.approx(total)
    assert row["spread"]["median_ms"] == pytest.approx(total) and row["spread"]["n"] == 2


def test_bench_rate_over_rpc(board, tmp_path):
    res = _invoke(board, ["rate", *TINY, "--stage", "1", "--S", "1,2", "--rates", "0,1", "--target", "llvm",
                          "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    path = tmp_path / f"rate_las_resnet50_cpu_rpc-{KEY}_quick.json"
    assert path.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    data = json.loads(path.read_text())
    _check_remote_header(data, board)
    assert data["max_rel_err"] < 1e-4  # every variant was checked against PyTorch on its board output
    assert [(p["S"], p["rate"], p["active_patches"]) for p in data["points"]] == [
        (1, 0.0, 0), (1, 1.0, 144), (2, 0.0, 0), (2, 1.0, 36)]
    static = data["stages"][0]["static"]
    _check_timed(static)
    for p in data["points"]:
        _check_timed(p)
        assert p["measured_static_ms"] == static["measured_ms"]
        assert p["measured_ratio"] == pytest.approx(p["measured_ms"] / static["measured_ms"])
        assert p["predicted_ms"] > 0 and p["predicted_ratio"] > 0
    assert data["accuracy"]["block"]["n"] == 5
    assert KEY in res.output


def test_bench_fusion_over_rpc(board, tmp_path):
    res = _invoke(board, ["fusion", *TINY, "--S", "2", "--target", "llvm", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / f"fusion_las_resnet101_cpu_rpc-{KEY}_quick.json").read_text())
    _check_remote_header(data, board)
    (case,) = data["cases"]
    assert (case["S"], case["rate"], case["active_patches"]) == (2, 0.6, 22)
    assert [v["variant"] for v in case["variants"]] == ["static", "none", "masker", "masker+gather", "all"]
    for v in case["variants"]:
        _check_timed(v)
    assert max(data["max_rel_err"].values()) < 1e-4
    assert "masker+gather" in res.output


def test_remote_block_matches_local(board):
    """A block on the board gives the local compiled block's output and mask, from tensors in the board's memory."""
    from lasnet_tvm.archs import BlockSpec
    from lasnet_tvm.models.synthetic import input_at_rate, random_folded_block
    from lasnet_tvm.block_runtime import CompiledBlock
    from lasnet_tvm.remote import connect

    spec = BlockSpec("t", 1, 0, 16, 8, 16, 1, 1, 0, 8, 8, 2)
    fb = random_folded_block(spec, 3)
    x, want = input_at_rate(spec, 0.5, 4)
    _wait_free(board[0])
    b = connect(board[0], KEY, "llvm")
    blk = b.block(fb, "masker")
    out, mask = blk(x)
    ref, ref_mask = CompiledBlock.build(fb, "llvm", fusion="masker")(x)
    assert torch.equal(mask, want) and torch.equal(ref_mask, want) and blk.active_count() == int(want.sum())
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert blk.tv["out"].device.dlpack_device_type() >= 128  # an RPC session's device (type + 128 * session)
    rows = blk.time_steps(x, repeat=2, min_repeat_ms=1)
    assert [r["kernel"] for r in rows] == [st.kernel for st in blk.steps]
    assert all(r["median_ms"] > 0 and len(r["samples_ms"]) == 2 for r in rows)
    assert [r["P"] for r in rows] == [None, 8, 8, 8, 8, None]  # masker+conv1, gather, ..., scatter, add_relu
    del b, blk, out, mask


def test_target_the_board_cannot_load_is_one_line_error(board, tmp_path):
    res = _invoke(board, ["rate", *TINY, "--stage", "1", "--S", "1", "--rates", "0", "--out", str(tmp_path),
                          "--target", "llvm -mtriple=aarch64-linux-gnu"])
    lines = res.output.strip().splitlines()
    assert res.exit_code != 0 and lines[-1].startswith("Error:"), res.output
    assert f"board {KEY!r}" in lines[-1] and "kernel conv1x1 upload/load failed" in lines[-1], res.output
    assert not list(tmp_path.iterdir())


def test_unknown_key_is_one_line_error(board, tmp_path):
    from lasnet_tvm.cli.main import cli

    res = CliRunner().invoke(cli, ["bench", "rate", *TINY, "--tracker", board[0], "--key", "otherboard",
                                   "--target", "llvm", "--out", str(tmp_path)])
    lines = res.output.strip().splitlines()
    assert res.exit_code != 0 and len(lines) == 1 and "no free board with key 'otherboard'" in lines[0], res.output


@pytest.mark.parametrize("args, words", [
    (["--key", KEY], "go together"),
    (["--tracker", "127.0.0.1:9"], "go together"),
    (["--tracker", "127.0.0.1:9", "--key", KEY], "needs --target"),
    (["--tracker", "nohost", "--key", KEY, "--target", "llvm"], "HOST:PORT"),
    (["--tracker", "CLOSED", "--key", KEY, "--target", "llvm"], "does not answer"),
])
def test_bench_rpc_bad_options(args, words):
    from lasnet_tvm.cli.main import cli

    args = [f"127.0.0.1:{free_port()}" if a == "CLOSED" else a for a in args]  # nothing listens there
    res = CliRunner().invoke(cli, ["bench", "granularity", "--quick", "--device", "xeon-6248", *args])
    lines = res.output.strip().splitlines()
    assert res.exit_code != 0 and len(lines) == 1 and lines[0].startswith("Error:") and words in lines[0], res.output


def test_jetson_kernels_are_uploaded_for_the_board():
    """For a Jetson target (sm_72, aarch64 host) the uploaded tars hold aarch64 objects and the kernels as a
    fatbin (sm_72 cubin + PTX, NVRTC 12 + ptxas 12) inlined in the module table, one tar per distinct kernel."""
    import tarfile

    import lasnet_tvm.cuda_binary as cb
    from lasnet_tvm.archs import BlockSpec
    from lasnet_tvm.models.synthetic import random_folded_block
    from lasnet_tvm.remote import Board

    if not cb.legacy_available():
        pytest.skip("sm_72 needs the cuda-legacy extra (pip install '.[cuda-legacy]')")

    class Session:  # records uploads; the tensors and runs need the board itself
        def __init__(self):
            self.uploaded = []

        def cuda(self, i):
            return None

        def upload(self, path, name):
            self.uploaded.append(path)

        def load_module(self, name):
            return name

    sess = Session()
    b = Board(sess, "h:1", "jetson", "nvidia/jetson-agx-xavier")
    b.tensor = lambda data: None  # no board memory here
    spec = BlockSpec("t", 1, 0, 16, 8, 16, 1, 1, 0, 8, 8, 2)
    blk = b.block(random_folded_block(spec), "all")
    b.block(random_folded_block(spec), "masker+gather")  # shares every kernel but scatter and add_relu
    assert len(sess.uploaded) == len(blk.steps) + 2 and b.target.kind.name == "cuda"
    for path in sess.uploaded:
        with tarfile.open(path) as tf:
            files = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}
        asm = files.pop("devc.s").decode()
        for name, data in files.items():
            assert data[:4] == b"\x7fELF" and int.from_bytes(data[18:20], "little") == 183, name  # aarch64
        blob = bytes(int(v) for line in asm.splitlines() if line.strip().startswith(".byte")
                     for v in line.split(None, 1)[1].split(","))
        (image,) = [cb.parse_cuda_module(p) for key, p in cb._split_blob(blob)[1] if key == "cuda"]
        assert image.fmt == "fatbin" and cb.fatbin_images(image.data) == ["cubin", "ptx"] and image.kernels


def test_kernel_failing_on_the_board_is_one_line_error():
    """A kernel that fails when the board runs it stops the block with a one-line error naming key and kernel."""
    import tvm

    from lasnet_tvm.archs import BlockSpec
    from lasnet_tvm.models.synthetic import input_at_rate, random_folded_block
    from lasnet_tvm.errors import LasnetError
    from lasnet_tvm.remote import Board

    def crash(*args):
        raise tvm.error.RPCError("Error caught from RPC call:\n  0: Foo\nRPCError: kernel crashed on the board")

    class Session:  # the board's memory is this process's; every kernel crashes when run
        def cpu(self, i):
            return tvm.cpu(0)

        def upload(self, path, name):
            pass

        def load_module(self, name):
            return {"main": crash}

    spec = BlockSpec("t", 1, 0, 16, 8, 16, 1, 1, 0, 8, 8, 2)
    blk = Board(Session(), "h:1", "k", "llvm").block(random_folded_block(spec), "all")
    with pytest.raises(LasnetError) as e:
        blk(input_at_rate(spec, 0.5)[0])
    assert str(e.value) == ("board 'k' (tracker h:1): kernel masker_conv1x1 run failed: RPCError: kernel crashed on "
                            "the board")
