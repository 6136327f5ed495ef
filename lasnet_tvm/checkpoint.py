"""The ``model.pt`` checkpoint format, and conversion of checkpoints from the official LASNet code.

``model.pt`` is a plain dict saved with :func:`torch.save` and loaded with ``torch.load(..., weights_only=True)``:
nothing in it executes code. Keys:

``format`` (``"lasnet-tvm/model"``), ``version`` (int), ``arch``, ``granularity`` (one S per block),
``input_size``, ``num_classes``, ``width_mult``, ``depths`` (blocks per stage; absent: the backbone's own),
``se_pool``, ``state_dict`` and ``meta`` (training metadata:
str/int/float/bool/list/dict values only).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Sequence

import torch

from .archs import ARCHS, arch_spec, depths_of, format_granularity, parse_granularity
from .errors import LasnetError
from .models import LASNet, build_model

FORMAT = "lasnet-tvm/model"
VERSION = 1
_REQUIRED = ("arch", "granularity", "input_size", "num_classes", "width_mult", "state_dict")


def save_checkpoint(path: str | Path, model: LASNet, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to ``path`` atomically (a temporary file renamed into place).

    Parameters
    ----------
    path : str or Path
        Destination ``model.pt``.
    model : LASNet
        The model; its spec (arch, granularity, sizes) is recorded beside the weights.
    meta : dict, optional
        Training metadata (plain Python values only, so that ``weights_only`` loading accepts it).
    """
    path = Path(path)
    s = model.spec
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "arch": s.arch,
        "granularity": list(s.granularity),
        "input_size": s.input_size,
        "num_classes": s.num_classes,
        "width_mult": float(s.width_mult),
        "depths": list(s.depths),
        "se_pool": model.se_pool,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }
    from .fsutil import atomic_path

    with atomic_path(path, "checkpoint") as tmp:
        torch.save(ckpt, tmp)
    return path


def _sniff(path: Path) -> str | None:
    """What a file that is not a PyTorch checkpoint looks like (None: it may be one)."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return None  # torch.save's zip archive, or a legacy pickle
    if head.startswith(b"\x7fELF") or head.startswith(b"MZ") or head[:4] in (b"\xcf\xfa\xed\xfe", b"\xfe\xed\xfa\xcf"):
        return "a shared library (a compiled model is run with `lasnet-tvm run`, not loaded as a model.pt)"
    if head.lstrip()[:1] in (b"{", b"["):
        return "a JSON/text file"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "neither a zip archive nor a pickle"


def _torch_load(path: str | Path) -> Any:
    path = Path(path)
    if path.is_dir():
        raise LasnetError(f"{path}: is a directory, not a checkpoint file")
    if not path.is_file():
        raise LasnetError(f"{path}: no such file")
    try:
        kind = _sniff(path)
    except OSError as e:
        raise LasnetError(f"{path}: cannot read ({e.strerror or e})") from None
    if kind is not None:
        raise LasnetError(f"{path}: not a PyTorch checkpoint ({kind})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types (RuntimeError, OSError, IndexError, ...)
        if isinstance(e, pickle.UnpicklingError) and ("weights_only" in str(e) or "Unsupported global" in str(e)):
            raise LasnetError(f"{path}: refused to load: the pickle holds objects that could run code") from None
        # the file starts as a zip archive or a pickle (see _sniff): a damaged one
        raise LasnetError(f"{path}: corrupt or truncated checkpoint (torch.load cannot read it)") from None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and validate a ``model.pt`` dict (no model is built)."""
    ckpt = _torch_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise LasnetError(
            f"{path}: not a lasnet-tvm model.pt (no '{FORMAT}' format tag); "
            "convert official LASNet checkpoints with `lasnet-tvm convert`"
        )
    if ckpt.get("version", 0) > VERSION:
        raise LasnetError(f"{path}: checkpoint version {ckpt['version']} is newer than this lasnet-tvm ({VERSION})")
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise LasnetError(f"{path}: checkpoint lacks field(s) {', '.join(missing)}")
    if ckpt["arch"] not in ARCHS:
        raise LasnetError(f"{path}: unknown arch {ckpt['arch']!r}")
    return ckpt


def load_checkpoint(
    path: str | Path,
    arch: str | None = None,
    granularity: str | Sequence[int] | None = None,
) -> tuple[LASNet, dict[str, Any]]:
    """Rebuild the model of a ``model.pt`` in eval mode.

    Parameters
    ----------
    path : str or Path
        The checkpoint.
    arch, granularity : optional
        When given, the checkpoint must be of this arch / granularity (else a LasnetError says which differs).

    Returns
    -------
    (LASNet, dict)
        The model (eval mode) and the checkpoint dict.
    """
    ckpt = read_checkpoint(path)
    if arch is not None and arch != ckpt["arch"]:
        raise LasnetError(f"{path}: checkpoint is {ckpt['arch']}, not {arch}")
    try:
        depths = depths_of(ckpt["arch"], ckpt.get("depths"))
    except LasnetError as e:
        raise LasnetError(f"{path}: {e}") from None
    if granularity is not None:
        want = parse_granularity(granularity, depths)
        if tuple(want) != tuple(ckpt["granularity"]):
            have = format_granularity(ckpt["granularity"], depths)
            raise LasnetError(f"{path}: checkpoint has granularity {have}, not {granularity}")
    try:
        model = build_model(
            ckpt["arch"], list(ckpt["granularity"]), int(ckpt["input_size"]), int(ckpt["num_classes"]),
            float(ckpt["width_mult"]), ckpt.get("se_pool", "active"), depths=depths,
        )
    except LasnetError as e:
        raise LasnetError(f"{path}: {e}") from None
    _load_state(model, ckpt["state_dict"], path)
    return model.eval(), ckpt


def _load_state(model: LASNet, state: dict[str, torch.Tensor], path: str | Path) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise LasnetError(f"{path}: weights do not fit {model.spec.arch} ({detail})")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise LasnetError(f"{path}: {k} has shape {tuple(state[k].shape)}, {model.spec.arch} expects {tuple(v.shape)}")
    model.load_state_dict(state)


# -- official LASNet checkpoints ------------------------------------------------------------------------------
def _official_state_dict(obj: Any, path: str | Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise LasnetError(f"{path}: no state_dict found (expected a dict with 'state_dict' or a bare state_dict)")
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in obj.items()}


def _infer_sizes(arch: str, state: dict[str, torch.Tensor], path: str | Path) -> tuple[int, float]:
    """Number of classes and width multiplier, read from the weights."""
    if "fc.weight" not in state:
        raise LasnetError(f"{path}: no fc.weight: not a {arch} checkpoint")
    num_classes = int(state["fc.weight"].shape[0])
    if arch.startswith("las_resnet"):
        key, base = "conv1.weight", 64
    else:
        key, base = "trunk_output.block1.block1-0.f.a.0.weight", 48 if arch.endswith("400mf") else 64
    if key not in state:
        raise LasnetError(f"{path}: no {key}: not a {arch} checkpoint")
    return num_classes, state[key].shape[0] / base


def convert_official(
    src: str | Path,
    arch: str,
    granularity: str | Sequence[int],
    input_size: int = 224,
    se_pool: str | None = None,
) -> LASNet:
    """Build a LAS model from a checkpoint of the official LASNet code (any of the four backbones).

    The official state_dict layout is ours, so the weights load unchanged (``module.`` prefixes dropped). The
    granularity must divide every block's feature size, where the official masker and ours agree exactly.
    ``se_pool`` defaults to ``"dense"`` (official SE semantics) for RegNetY; pass ``"active"`` for the
    semantics the sparse kernels execute (outputs then differ until the model is fine-tuned).
    """
    if arch not in ARCHS:
        raise LasnetError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    state = _official_state_dict(_torch_load(src), src)
    num_classes, width_mult = _infer_sizes(arch, state, src)
    spec = arch_spec(arch, granularity, input_size, num_classes, width_mult)
    for b in spec.blocks:
        if b.out_size % b.S:
            raise LasnetError(
                f"granularity S={b.S} does not divide the {b.out_size}x{b.out_size} output of {b.name}: "
                "the official masker's edge rule differs there"
            )
    if se_pool is None:
        se_pool = "dense" if spec.family == "regnet" else "active"
    model = LASNet(spec, se_pool=se_pool)
    _load_state(model, state, src)
    return model.eval()
