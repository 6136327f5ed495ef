"""Images in and mask figures out (the paper's Fig. 9)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import LasnetError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def load_image(path: str | Path, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """Resize (shorter side) and center-crop an image; returns the normalized ``[1, 3, size, size]`` tensor
    and the crop as an ``[size, size, 3]`` uint8 array for display."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise LasnetError(f"{path}: no such image")
    try:
        img = Image.open(path).convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise LasnetError(f"{path}: not an image ({type(e).__name__})") from None
    scale = size / min(img.size)
    img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))), Image.BILINEAR)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    crop = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)
    x = (crop.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(x.transpose(2, 0, 1).copy())[None], crop


@torch.no_grad()
def plot_masks(model, x: torch.Tensor, shown: np.ndarray, output: str | Path) -> list[float]:
    """Plot each block's mask over ``shown``; returns the per-block activation rates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    _, stats = model(x, return_stats=True)
    blocks = model.blocks
    cols = max(sum(1 for b in blocks if b.spec.stage == s) for s in range(1, 5))
    fig, axes = plt.subplots(4, cols, figsize=(2 * cols, 8.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    rates = []
    for block, mask, rate in zip(blocks, stats["masks"], stats["rates"][0]):
        s = block.spec
        _overlay(axes[s.stage - 1, s.index], shown, mask[0, 0], s)
        axes[s.stage - 1, s.index].set_title(f"{s.name} S={s.S} r={float(rate):.2f}", fontsize=7)
        rates.append(float(rate))
    _save(fig, output)
    return rates


def _overlay(ax, shown: np.ndarray, mask: torch.Tensor, spec) -> None:
    """Draw ``shown`` with the skipped pixels of a coarse mask ``[g, g]`` of block ``spec`` greyed out."""
    size = shown.shape[0]
    m = mask.numpy().repeat(spec.S, 0).repeat(spec.S, 1)[: spec.out_size, : spec.out_size]
    near = np.arange(size) * spec.out_size // size  # nearest mask pixel of each image pixel
    up = m[near][:, near]
    ax.imshow(shown)
    ax.imshow(np.ma.masked_where(up > 0, up), cmap="gray", alpha=0.6, vmin=0, vmax=1)


def _save(fig, output: str | Path) -> None:
    import matplotlib.pyplot as plt

    from .fsutil import atomic_path

    fig.tight_layout()
    try:
        with atomic_path(output, "plot") as tmp:
            fig.savefig(tmp, dpi=100, format=Path(output).suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)


@torch.no_grad()
def plot_mask_rows(model, x: torch.Tensor, shown: np.ndarray, output: str | Path,
                   titles: list[str] | None = None) -> None:
    """One row per image of ``x`` ``[N, 3, H, W]``: the image (``shown[n]``, ``[H, W, 3]`` uint8) and the mask of
    the first block of each stage over it (skipped pixels greyed out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    _, stats = model(x, return_stats=True)
    firsts = [i for i, b in enumerate(model.blocks) if b.spec.index == 0]
    fig, axes = plt.subplots(len(x), 1 + len(firsts), figsize=(2 * (1 + len(firsts)), 2.1 * len(x)), squeeze=False)
    for n in range(len(x)):
        axes[n, 0].imshow(shown[n])
        axes[n, 0].set_title(titles[n] if titles else "input", fontsize=7)
        for col, i in enumerate(firsts, start=1):
            spec = model.blocks[i].spec
            _overlay(axes[n, col], shown[n], stats["masks"][i][n, 0], spec)
            axes[n, col].set_title(f"stage {spec.stage} S={spec.S} r={float(stats['rates'][n, i]):.2f}", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    _save(fig, output)
