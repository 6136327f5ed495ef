"""LAS blocks run and timed on a board over TVM RPC (``lasnet-tvm bench fusion|rate|granularity --tracker``).

>>> board = connect("tracker.lan:9190", "xavier", "llvm -mtriple=aarch64-linux-gnu")
>>> blk = board.block(fold_block(model.layer1[0]), fusion="all")
>>> out, mask = blk(x)                      # run once on the board; results copied back
>>> rows = blk.time_steps(x, repeat=5)      # each kernel timed on the board with time_evaluator

Every kernel of the block's plan (:func:`lasnet_tvm.block_plan.block_plan`) is compiled here for the board's
target under its default schedule, exported as a tar of object files (the board's RPC server links it, as
MetaSchedule's RPC runner does), uploaded once per distinct kernel and loaded remotely. Weights and
activations live in the board's memory. A call uploads the input, runs the steps in order, reads the
masker's ``count`` back to size the active-patch buffers (fresh ``P``-sized tensors and a copy of the first
``P`` patch indices; this setup is not timed) and copies the output and mask back. There is no Python glue
on the board, so a block's time there is the sum of its kernels' times.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import torch
import tvm

from .block_plan import Fusion, block_plan, prepared_weights
from .block_runtime import _check, scheduled_kernel, uses_patches
from .errors import LasnetError
from .models.folded import FoldedBlock
from .targets import resolve_target, target_kind


def _last_line(e: BaseException) -> str:
    """The telling line of a (multi-line) TVM error: the last one naming an error (else the last one), linker
    command and summary lines left out."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("Command line:", "collect2:"))] or lines
    errors = [ln for ln in lines if "error" in ln.lower()]
    return ((errors or lines)[-1] if lines else type(e).__name__)[:240]


def _tar_fixing_ptx(output: str, files: list, **kwargs):
    """:func:`tvm.support.tar.tar` (a gzipped tar) after making the NVPTX kernels in ``files`` launchable
    (:func:`lasnet_tvm.targets.fix_ptx_entries_in_library`: TVM 0.27 emits them as ``.func``)."""
    from tvm.support.tar import tar

    from .targets import fix_ptx_entries_in_library

    for f in files:
        fix_ptx_entries_in_library(f)
    return tar(output, files, **kwargs)


_tar_fixing_ptx.output_format = "tar"


def connect(tracker: str, key: str, target, session_timeout: float = 0) -> Board:
    """Request the board registered as ``key`` at ``tracker`` (``HOST:PORT``) for running ``target`` code.

    Parameters
    ----------
    tracker : str
        ``HOST:PORT`` of the TVM RPC tracker.
    key : str
        Key the board's RPC server registered with.
    target : str, dict or tvm Target
        The board's target (:func:`lasnet_tvm.targets.resolve_target`); ``cuda``/``nvptx`` runs on the board's
        GPU, anything else on its CPU.
    session_timeout : float
        Seconds the board's server stays reserved for this process (0: until the process lets it go).

    Raises
    ------
    LasnetError
        Malformed ``tracker``, tracker not answering, no free board with ``key``, or the board refused the connection.
    """
    from tvm import rpc

    from .tuning.measure import check_tracker, parse_tracker

    host, port = parse_tracker(tracker)
    if not key:
        raise LasnetError("--tracker needs --key (the key the board's RPC server registered with)")
    check_tracker(host, port, key)
    try:
        sess = rpc.connect_tracker(host, port).request(key, session_timeout=session_timeout)
    except Exception as e:  # noqa: BLE001 - TVM raises RPCError / TVMError / OSError with long texts
        raise LasnetError(f"RPC tracker {host}:{port}: no connection to a board {key!r} ({_last_line(e)})") from None
    return Board(sess, f"{host}:{port}", key, target)


class Board:
    """An RPC connection to one board: compiles, uploads and loads kernels (each distinct one once).

    Build with :func:`connect`. ``kind`` is ``"cpu"`` or ``"cuda"``; ``dev`` the remote device.
    """

    def __init__(self, sess, tracker: str, key: str, target):
        self.sess, self.tracker, self.key = sess, tracker, key
        self.target = resolve_target(target)
        self.spelling = target if isinstance(target, str) else str(self.target)  # as the user wrote it
        self.kind = target_kind(target)
        self.dev = sess.cuda(0) if self.kind == "cuda" else sess.cpu(0)
        self._mods: dict = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="lasnet-rpc-")  # the tars, removed with the board

    def describe(self) -> str:
        """Words for the JSON's ``device``: the key, the tracker and the target."""
        return f"board {self.key!r} over TVM RPC (tracker {self.tracker}), target {self.spelling}"

    def header(self) -> dict:
        """Fields of a benchmark JSON measured here: ``device``, ``timing``, ``threads`` (None) and ``note``."""
        return {"device": self.describe(),
                "timing": f"remote kernel sums over RPC (tracker {self.tracker}, key {self.key})", "threads": None,
                "note": "run and checked on the board; each kernel timed there with time_evaluator (repeats = "
                        "kernel_repeat samples of at least min_repeat_ms each); a block's measured_ms is the sum of "
                        "its kernel medians (no Python glue on the board); threads: the board server's own; "
                        "machine, versions and load_average describe this host"}

    def fail(self, kernel: str, what: str, e: BaseException) -> LasnetError:
        """A one-line error naming the board's key and the kernel."""
        return LasnetError(f"board {self.key!r} (tracker {self.tracker}): kernel {kernel} {what} failed: "
                           f"{_last_line(e)}")

    def module(self, name: str, params: dict):
        """Remote module of kernel ``name(**params)`` for the board's target (compiled and uploaded once)."""
        ck = (name, tuple(sorted(params.items())))
        if ck in self._mods:
            return self._mods[ck]
        from tvm.support.tar import tar

        build_tgt = self.target
        try:
            mod = scheduled_kernel(name, self.target, **params)
            extra = {}
            if self.kind == "cuda":
                from .compiler import build_target
                from .cuda_binary import binary_pack_imports

                build_tgt = build_target(self.target)
                if build_tgt.kind.name == "cuda":  # kernels as a fatbin: the board compiles nothing
                    extra["fpack_imports"] = binary_pack_imports(str(build_tgt.attrs["arch"]), [], inline=True)
            path = os.path.join(self._tmp.name, f"k{len(self._mods)}_{name}.tar")
            pack = _tar_fixing_ptx if build_tgt.kind.name == "nvptx" else tar
            tvm.compile(mod, target=build_tgt).export_library(path, fcompile=pack, **extra)
        except LasnetError:
            raise
        except Exception as e:  # noqa: BLE001
            raise LasnetError(f"compiling kernel {name} for {self.spelling} failed: {_last_line(e)}") from None
        try:
            self.sess.upload(path, os.path.basename(path))
            rmod = self.sess.load_module(os.path.basename(path))
        except Exception as e:  # noqa: BLE001
            hint = f"is the target {self.spelling} right for this board?"
            if self.kind == "cuda" and self.target.host is None:
                hint += (" Without a host the CUDA host code is built for this machine; for a Jetson give a tag "
                         "(nvidia/jetson-agx-xavier) or a JSON target with \"host\": {\"kind\": \"llvm\", "
                         "\"mtriple\": \"aarch64-linux-gnu\"}")
            raise LasnetError(f"{self.fail(name, 'upload/load', e)} ({hint})") from None
        self._mods[ck] = rmod
        return rmod

    def tensor(self, data: np.ndarray):
        """A copy of ``data`` in the board's memory."""
        return tvm.runtime.tensor(np.ascontiguousarray(data), device=self.dev)

    def block(self, fb: FoldedBlock, fusion: Fusion | str = Fusion.ALL, static: bool = False) -> RemoteBlock:
        """Compile and load every kernel of the block and place its weights and buffers on the board."""
        fusion = Fusion.parse(fusion)
        _check(fb)
        return RemoteBlock(self, fb, fusion, static)


class RemoteBlock:
    """A LAS block on a board, with the interface of :class:`~lasnet_tvm.block_runtime.CompiledBlock` that the
    benchmarks use: ``fb``, ``fusion``, ``static``, ``device`` (where results come back: CPU), ``steps``,
    ``__call__``, :meth:`active_count` and :meth:`time_steps`."""

    device = torch.device("cpu")

    def __init__(self, board: Board, fb: FoldedBlock, fusion: Fusion, static: bool):
        self.board, self.fb, self.fusion, self.static = board, fb, fusion, static
        self.target = board.target
        self.steps = block_plan(fb.spec, fusion, static)
        self.mods = [board.module(st.kernel, st.params) for st in self.steps]
        self.shapes = {name: shape for st in self.steps for name, shape, _ in st.outputs}
        # weights and the patch-independent activations, zeroed once (zero-bordered maps keep their border)
        self.tv = {k: board.tensor(w) for k, w in prepared_weights(fb).items()}
        for st in self.steps:
            for name, shape, dtype in st.outputs:
                if "P" not in shape:
                    self.tv[name] = board.tensor(np.zeros(shape, dtype))
        self._calls: list = []
        self._count = None

    def active_count(self) -> int:
        """Number of active patches of the last call (read from the board's ``count``)."""
        return int(self._count)

    def _run(self, x: torch.Tensor) -> list:
        """Run every step on the board; returns the remote arguments of each call."""
        s, b = self.fb.spec, self.board
        x = x[0] if x.dim() == 4 and x.shape[0] == 1 else x
        if tuple(x.shape) != (s.c_in, s.in_size, s.in_size) or x.dtype != torch.float32:
            raise LasnetError(f"block {s.name}: input {tuple(x.shape)} {x.dtype}, expected float32 "
                              f"{(s.c_in, s.in_size, s.in_size)}")
        env = dict(self.tv, x=b.tensor(x.detach().cpu().numpy()))
        P, calls = None, []
        for st, mod in zip(self.steps, self.mods):
            if P is None and any("P" in shape for _, shape, _ in st.outputs):
                try:  # the masker has run: make buffers for the active patches
                    self._count = P = int(self.tv["count"].numpy()[0])
                    env["idx"] = b.tensor(self.tv["idx"].numpy()[:P])
                except Exception as e:  # noqa: BLE001
                    raise b.fail(st.kernel, "reading the active count", e) from None
                for name, shape in self.shapes.items():
                    if "P" in shape:
                        env[name] = b.tensor(np.zeros([P if d == "P" else d for d in shape], "float32"))
            args = [env[n] for n in st.inputs] + [env[n] for n, _, _ in st.outputs]
            try:
                mod["main"](*args)
            except Exception as e:  # noqa: BLE001
                raise b.fail(st.kernel, "run", e) from None
            calls.append(args)
        self._calls = calls
        return calls

    def __call__(self, x: torch.Tensor):
        """Run the block on the board on ``x`` (``[C_in, H, W]``); returns ``(out, mask)`` as CPU tensors."""
        s = self.fb.spec
        self._run(x)
        try:
            out = torch.from_numpy(self.tv["out"].numpy())
            mask = None if self.static else torch.from_numpy(self.tv["mask"].numpy()).view(s.grid, s.grid) != 0
        except Exception as e:  # noqa: BLE001
            raise self.board.fail(self.steps[-1].kernel, "reading the output", e) from None
        return out, mask

    def time_steps(self, x: torch.Tensor, repeat: int = 5, min_repeat_ms: int = 5) -> list[dict]:
        """Time each kernel on the board with ``time_evaluator`` after one run on ``x`` (as
        :meth:`CompiledBlock.time_steps <lasnet_tvm.block_runtime.CompiledBlock.time_steps>`)."""
        calls = self._run(x)
        P = None if self.static else self.active_count()
        res = []
        for st, mod, args in zip(self.steps, self.mods, calls):
            try:
                timer = mod.time_evaluator("main", self.board.dev, number=1, repeat=repeat,
                                           min_repeat_ms=int(min_repeat_ms))
                samples = [t * 1e3 for t in timer(*args).results]
            except Exception as e:  # noqa: BLE001
                raise self.board.fail(st.kernel, "timing", e) from None
            res.append({"kernel": st.kernel, "params": dict(st.params),
                        "P": P if uses_patches(st, self.shapes) else None,
                        "median_ms": float(np.median(samples)), "samples_ms": samples})
        return res
