"""The LASNet training loop: :class:`TrainConfig` in, ``model.pt`` (and a resumable state file) out.

The library never reads ``argv``; ``lasnet-tvm train`` builds a :class:`TrainConfig` and calls :func:`train`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..archs import arch_spec, depths_of, format_granularity
from ..checkpoint import save_checkpoint
from ..errors import LasnetError
from ..models import LASNet, build_model
from .data import SYNTHETIC_SETS, folder_splits
from .losses import LossWeights, cosine_lr, gumbel_temperature, lasnet_loss, rate_bounds

STATE_FORMAT = "lasnet-tvm/train-state"


@dataclass
class TrainConfig:
    """Everything a training run needs (see ``lasnet-tvm train --help`` for the meaning of each field).

    ``lr`` is the backbone's learning rate; maskers train at ``lr * masker_lr_mult``. ``static_epochs``
    first trains the static counterpart (maskers off, cross-entropy only) and then freezes it as the
    teacher: useful when training from scratch, where the initial model is no teacher. ``threads`` None
    uses every core. ``zero_init_residual`` zeroes each block's last BN scale when no ``init`` is given (each
    block starts as the identity). ``warmup_epochs`` ramps the learning rate up linearly before its cosine
    decay. ``depths`` (blocks per stage, e.g. ``(1, 1, 1, 1)``) trains a shallower variant of ``arch``;
    ``data`` is ``"synthetic"``, ``"clutter"``, ``"pairs"`` (see :data:`~lasnet_tvm.train.data.SYNTHETIC_SETS`) or a folder.
    """

    output: str = "model.pt"
    arch: str = "las_resnet50"
    granularity: str = "4-4-2-1"
    input_size: int = 224
    width_mult: float = 1.0
    depths: tuple[int, ...] | None = None
    num_classes: int | None = None
    se_pool: str = "active"
    data: str = "synthetic"
    train_size: int = 2000
    val_size: int = 500
    val_fraction: float = 0.2
    epochs: int = 10
    static_epochs: int = 0
    batch_size: int = 64
    lr: float = 0.1
    warmup_epochs: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    masker_lr_mult: float = 10.0
    target: float = 0.5
    alpha: float = 10.0
    beta: float = 0.5
    kd_temperature: float = 4.0
    t0: float = 5.0
    t_last: float = 0.1
    init: str | None = None
    resume: bool = False
    seed: int = 0
    threads: int | None = None
    progress: bool = True
    zero_init_residual: bool = True


@dataclass
class TrainResult:
    """Outcome of :func:`train`: final validation metrics, per-epoch history and the files written."""

    output: Path
    state_path: Path
    epochs: int
    accuracy: float
    rate: float
    rate_per_block: list[float]
    flops_ratio: float
    wall_s: float
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None
    init_missing: list[str] = field(default_factory=list)
    init_unexpected: list[str] = field(default_factory=list)


def state_path_for(output: str | Path) -> Path:
    """The resumable state file beside ``output`` (``model.pt`` -> ``model.pt.state``)."""
    output = Path(output)
    return output.with_name(output.name + ".state")


def _check_config(cfg: TrainConfig) -> None:
    if cfg.epochs < 1 or not 0 <= cfg.static_epochs < cfg.epochs:
        raise LasnetError(f"need epochs >= 1 and 0 <= static epochs < epochs (got {cfg.epochs}, {cfg.static_epochs})")
    if cfg.batch_size < 1 or cfg.lr <= 0 or cfg.masker_lr_mult <= 0:
        raise LasnetError("batch size, learning rate and masker lr multiplier must be positive")
    if not 0.0 <= cfg.warmup_epochs < cfg.epochs:
        raise LasnetError(f"warm-up must be >= 0 and shorter than training, got {cfg.warmup_epochs} epochs")
    if not 0.0 < cfg.target <= 1.0:
        raise LasnetError(f"FLOPs target must be in (0, 1], got {cfg.target}")


def build_data(cfg: TrainConfig) -> tuple[Dataset, Dataset, int, str]:
    """Train set, val set, number of classes and a description of the data."""
    if cfg.data in SYNTHETIC_SETS:
        make = SYNTHETIC_SETS[cfg.data]
        n = cfg.num_classes or make.DEFAULT_CLASSES
        train = make(cfg.train_size, cfg.input_size, n, cfg.seed, "train", flip=True)
        val = make(cfg.val_size, cfg.input_size, n, cfg.seed, "val")
        return train, val, n, f"{cfg.data} shapes (seed {cfg.seed}, {cfg.train_size}/{cfg.val_size} images)"
    train, val = folder_splits(cfg.data, cfg.input_size, cfg.seed, cfg.val_fraction)
    if cfg.num_classes is not None and cfg.num_classes != train.num_classes:
        raise LasnetError(f"{cfg.data}: {train.num_classes} class folders, but --num-classes {cfg.num_classes}")
    return train, val, train.num_classes, f"{cfg.data} ({len(train)}/{len(val)} images)"


def load_init_weights(model: LASNet, path: str | Path) -> tuple[list[str], list[str]]:
    """Load a torchvision-format ResNet/RegNet state_dict into ``model`` (maskers keep their init).

    Keys are matched by name after stripping ``module.``; keys whose shape differs (e.g. ``fc`` for another
    number of classes) are skipped. Returns ``(missing, unexpected)``: model keys not loaded (masker keys
    excluded) and file keys not used.
    """
    path = Path(path)
    if not path.is_file():
        raise LasnetError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a user error
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LasnetError(f"{path}: not a loadable state_dict ({first[:160]})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise LasnetError(f"{path}: not a state_dict (a dict of tensors)")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}
    own = model.state_dict()
    fits = {k: v for k, v in state.items() if "masker" not in k and k in own and own[k].shape == v.shape}
    if not fits:
        raise LasnetError(f"{path}: no weight fits {model.spec.arch} (wrong architecture or width?)")
    model.load_state_dict(fits, strict=False)
    missing = [k for k in own if k not in fits and "masker" not in k]
    unexpected = [k for k in state if k not in fits]
    return missing, unexpected


def _optimizer(model: LASNet, cfg: TrainConfig) -> torch.optim.SGD:
    masker = [p for n, p in model.named_parameters() if "masker" in n]
    backbone = [p for n, p in model.named_parameters() if "masker" not in n]
    groups = [dict(params=backbone, lr_scale=1.0), dict(params=masker, lr_scale=cfg.masker_lr_mult)]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@torch.no_grad()
def evaluate(model: LASNet, loader: DataLoader) -> dict[str, Any]:
    """Eval-mode accuracy, activation rate (per block and mean over blocks) and FLOPs ratio on ``loader``."""
    model.eval()
    correct, n, rates, flops = 0, 0, 0.0, 0.0
    for x, y in loader:
        logits, stats = model(x, return_stats=True)
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
        rates = rates + stats["rates"].sum(0)
        flops += float(stats["flops"].sum())
    per_block = (rates / max(n, 1)).tolist()
    return {
        "accuracy": correct / max(n, 1),
        "rate": sum(per_block) / len(per_block),
        "rate_per_block": [round(r, 4) for r in per_block],
        "flops_ratio": flops / max(n, 1) / model.static_flops(),
    }


def _spec_dict(model: LASNet) -> dict[str, Any]:
    s = model.spec
    return {"arch": s.arch, "granularity": list(s.granularity), "input_size": s.input_size,
            "num_classes": s.num_classes, "width_mult": float(s.width_mult), "depths": list(s.depths)}


def _load_state(path: Path, model: LASNet) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LasnetError(f"{path}: not a lasnet-tvm training state ({first[:160]})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise LasnetError(f"{path}: not a lasnet-tvm training state")
    have, want = state["spec"], _spec_dict(model)
    have.setdefault("depths", list(depths_of(have["arch"])))
    for key in ("arch", "depths", "granularity", "input_size", "num_classes", "width_mult"):
        if have[key] != want[key]:
            fmt = (lambda g: format_granularity(g, want["depths"])) if key == "granularity" else str
            raise LasnetError(
                f"{path}: cannot resume: the state has {key} {fmt(have[key])}, this run asks for {fmt(want[key])}"
            )
    return state


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    from ..fsutil import atomic_path

    with atomic_path(path, "training state") as tmp:
        torch.save(obj, tmp)


def train(cfg: TrainConfig, on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train a LAS model as the paper does and write ``cfg.output`` (plus ``<output>.state`` each epoch).

    ``on_epoch_end``, if given, is called with each epoch's history entry after its state file is written.

    Raises
    ------
    LasnetError
        Bad configuration, unreadable data or init weights, or a resume state of another model.
    """
    _check_config(cfg)
    output, state_path = Path(cfg.output), state_path_for(cfg.output)
    arch_spec(cfg.arch, cfg.granularity, cfg.input_size, 2, cfg.width_mult, cfg.depths)  # fail fast on a bad arch/S
    if cfg.resume and not state_path.is_file():
        raise LasnetError(f"{state_path}: no training state to resume from")
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    # Gumbel softmax at low temperatures sends gradients into the denormal range, where x86 float arithmetic
    # slows down several-fold (a dynamic epoch of the demo model: 36 s instead of 8); flush them to zero.
    torch.set_flush_denormal(True)
    try:
        return _train(cfg, output, state_path, on_epoch_end)
    finally:
        torch.set_flush_denormal(False)  # torch's default
        torch.set_num_threads(threads_before)


def _train(cfg: TrainConfig, output: Path, state_path: Path, on_epoch_end) -> TrainResult:
    start = time.time()
    train_ds, val_ds, num_classes, data_name = build_data(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch, cfg.granularity, cfg.input_size, num_classes, cfg.width_mult, cfg.se_pool,
                        depths=cfg.depths)
    missing: list[str] = []
    unexpected: list[str] = []
    optimizer = _optimizer(model, cfg)
    first_epoch, iteration, history, teacher, elapsed = 0, 0, [], None, 0.0
    if cfg.resume:
        state = _load_state(state_path, model)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_torch"])
        first_epoch, iteration = int(state["epoch"]), int(state["iteration"])
        history, elapsed = list(state["history"]), float(state["elapsed_s"])
        if state["teacher"] is not None:
            teacher = model.static_counterpart()
            teacher.load_state_dict(state["teacher"])
    elif cfg.init:
        missing, unexpected = load_init_weights(model, cfg.init)
    elif cfg.zero_init_residual:
        for block in model.blocks:  # each residual branch starts at zero: steadier training from scratch
            torch.nn.init.zeros_(block.bn3.weight)

    drop_last = len(train_ds) > cfg.batch_size
    train_loader_len = len(train_ds) // cfg.batch_size if drop_last else 1
    val_loader = DataLoader(val_ds, batch_size=cfg.batch_size)
    total_iters = cfg.epochs * train_loader_len
    warmup_iters = round(cfg.warmup_epochs * train_loader_len)
    dyn_epochs = cfg.epochs - cfg.static_epochs
    dyn_iters = dyn_epochs * train_loader_len
    static_flops = model.static_flops()
    block_static = torch.tensor([b.static_flops() for b in model.blocks])
    weights = LossWeights(cfg.alpha, cfg.beta, cfg.kd_temperature)
    metrics = evaluate(model, val_loader) if first_epoch >= cfg.epochs else {}

    for epoch in range(first_epoch, cfg.epochs):
        dynamic = epoch >= cfg.static_epochs
        model.set_static(not dynamic)
        if dynamic and teacher is None:
            teacher = model.static_counterpart()
        if teacher is not None:
            teacher.eval().requires_grad_(False)
        model.train()
        loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, drop_last=drop_last,
                            generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}" + ("" if dynamic else " (static)"),
                   disable=not cfg.progress, leave=False)
        seen, correct, rate_sum, loss_sum = 0, 0, 0.0, 0.0
        for i, (x, y) in enumerate(bar):
            lr = cosine_lr(cfg.lr, iteration, total_iters, warmup_iters)
            for g in optimizer.param_groups:
                g["lr"] = lr * g["lr_scale"]
            dyn_it = (epoch - cfg.static_epochs) * train_loader_len + i
            tau = gumbel_temperature(dyn_it, dyn_iters, cfg.t0, cfg.t_last)
            logits, stats = model(x, temperature=tau, return_stats=True)
            if dynamic:
                bounds = rate_bounds(epoch - cfg.static_epochs + i / train_loader_len, dyn_epochs, cfg.target)
                with torch.no_grad():
                    t_logits = teacher(x) if cfg.beta else None
                loss, terms = lasnet_loss(logits, y, stats, block_static, static_flops, cfg.target, bounds,
                                          t_logits, weights)
            else:
                loss = torch.nn.functional.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            iteration += 1
            seen += len(y)
            correct += int((logits.argmax(1) == y).sum())
            rate_sum += float(stats["rates"].detach().mean(1).sum())
            loss_sum += float(loss.detach()) * len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", rate=f"{rate_sum / seen:.3f}")
        bar.close()
        metrics = evaluate(model, val_loader)
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1),
                        "val_accuracy": metrics["accuracy"], "val_rate": metrics["rate"],
                        "val_flops_ratio": metrics["flops_ratio"], "temperature": tau, "lr": lr})
        elapsed_now = elapsed + time.time() - start
        _atomic_save({
            "format": STATE_FORMAT, "version": 1, "epoch": epoch + 1, "iteration": iteration,
            "model": model.state_dict(), "teacher": None if teacher is None else teacher.state_dict(),
            "optimizer": optimizer.state_dict(), "rng_torch": torch.get_rng_state(),
            "spec": _spec_dict(model), "config": dataclasses.asdict(cfg), "history": history,
            "elapsed_s": elapsed_now,
        }, state_path)
        if on_epoch_end is not None:
            on_epoch_end(history[-1])

    model.set_static(False)
    wall = elapsed + time.time() - start
    meta = {
        "epochs": cfg.epochs, "static_epochs": cfg.static_epochs, "target": cfg.target,
        "granularity": cfg.granularity, "accuracy": metrics["accuracy"], "rate": metrics["rate"],
        "rate_per_block": metrics["rate_per_block"], "flops_ratio": metrics["flops_ratio"], "data": data_name,
        "classes": list(getattr(train_ds, "classes", [])), "time_s": round(wall, 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "lr": cfg.lr, "batch_size": cfg.batch_size,
        "alpha": cfg.alpha, "beta": cfg.beta, "kd_temperature": cfg.kd_temperature,
        "masker_lr_mult": cfg.masker_lr_mult, "seed": cfg.seed, "init": cfg.init or "",
        "dataset": cfg.data if cfg.data in SYNTHETIC_SETS else "folder", "warmup_epochs": cfg.warmup_epochs,
    }
    save_checkpoint(output, model.eval(), meta)
    return TrainResult(output, state_path, cfg.epochs, metrics["accuracy"], metrics["rate"],
                       metrics["rate_per_block"], metrics["flops_ratio"], wall, history,
                       first_epoch if cfg.resume else None, missing, unexpected)
