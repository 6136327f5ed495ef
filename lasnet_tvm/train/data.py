"""Data sets for training LAS models: synthetic shapes, disc pairs and image folders (PIL and torch only).

All return ``(image, label)`` with ``image`` a float tensor ``[3, H, W]`` normalized with the ImageNet mean
and standard deviation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from ..errors import LasnetError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
SPLIT_IDS = {"train": 0, "val": 1}


def normalize(x: torch.Tensor) -> torch.Tensor:
    """ImageNet normalization of images in [0, 1], ``[..., 3, H, W]``."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(3, 1, 1)
    return (x - mean) / std


# -- synthetic shapes ----------------------------------------------------------------------------------------
def _radial(x, y):
    return torch.sqrt(x * x + y * y)


# Indicator of each shape on coordinates normalized to the object's radius (centre 0, radius 1).
_SHAPES = (
    lambda x, y: _radial(x, y) <= 1.0,  # disc
    lambda x, y: torch.maximum(x.abs(), y.abs()) <= 0.8,  # square
    lambda x, y: (y >= -1.0) & (y <= 0.7) & (x.abs() <= (y + 1.0) * 0.6),  # triangle (apex up)
    lambda x, y: ((x.abs() <= 0.3) & (y.abs() <= 1.0)) | ((y.abs() <= 0.3) & (x.abs() <= 1.0)),  # plus
    lambda x, y: (_radial(x, y) <= 1.0) & (_radial(x, y) >= 0.55),  # ring
    lambda x, y: x.abs() + y.abs() <= 1.0,  # diamond
    lambda x, y: (torch.maximum(x.abs(), y.abs()) <= 0.9) & (torch.maximum(x.abs(), y.abs()) >= 0.55),  # frame
    lambda x, y: x**2 + (y / 0.4) ** 2 <= 1.0,  # horizontal ellipse
    lambda x, y: (x / 0.4) ** 2 + y**2 <= 1.0,  # vertical ellipse
    lambda x, y: (y <= 1.0) & (y >= -0.7) & (x.abs() <= (1.0 - y) * 0.6),  # triangle (apex down)
    lambda x, y: ((x - 0.5) ** 2 + y * y <= 0.2) | ((x + 0.5) ** 2 + y * y <= 0.2),  # two dots
    lambda x, y: ((x.abs() <= 0.25) & (y.abs() <= 1.0)) | ((y.abs() <= 0.25) & (x >= -0.25) & (x <= 1.0)),  # L
)


SHAPE_NAMES = ("disc", "square", "triangle", "plus", "ring", "diamond", "frame", "h-ellipse", "v-ellipse",
               "triangle-down", "two-dots", "L")


def _backgrounds(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """Textured backgrounds ``[n, 3, size, size]`` in [0, 1]: a colour plus noise, stripes and a gradient."""
    base = torch.rand(n, 3, 1, 1, generator=g) * 0.6 + 0.2
    coarse = torch.rand(n, 3, 6, 6, generator=g) - 0.5
    up = F.interpolate(torch.eye(6).unsqueeze(0), size=size, mode="linear", align_corners=False)[0].T  # [size, 6]
    noise = up @ coarse @ up.T  # separable bilinear upsampling
    fine = torch.rand(n, 1, size, size, generator=g) - 0.5
    lin = torch.linspace(-1.0, 1.0, size)
    yy, xx = lin.view(1, size, 1), lin.view(1, 1, size)
    angle = torch.rand(n, 1, 1, generator=g) * math.pi
    freq = torch.rand(n, 1, 1, generator=g) * 10 + 3
    proj = xx * torch.cos(angle) + yy * torch.sin(angle)
    stripes = torch.sin(proj * freq + torch.rand(n, 1, 1, generator=g) * 6.3).unsqueeze(1)
    grad = (proj.unsqueeze(1) * (torch.rand(n, 3, 1, 1, generator=g) - 0.5))
    amp = torch.rand(n, 4, 1, 1, generator=g) * torch.tensor([0.4, 0.15, 0.25, 0.5]).view(1, 4, 1, 1)
    bg = base + amp[:, :1] * noise + amp[:, 1:2] * fine + amp[:, 2:3] * stripes + amp[:, 3:4] * grad
    return bg.clamp(0.0, 1.0), base


def generate_shapes(n: int, size: int, num_classes: int, seed: int, min_radius: float = 0.12,
                    max_radius: float = 0.35, clutter: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` shape images (uint8 ``[n, 3, size, size]``) and their labels (int64 ``[n]``).

    Each image holds one object (its class is the shape) of a random colour, radius (a fraction
    ``[min_radius, max_radius]`` of the side) and position, on a textured background with ``clutter`` small
    distractors (see :func:`render_shapes`). Deterministic in ``seed``; vectorized over images.
    """
    images, labels, _ = render_shapes(n, size, num_classes, seed, min_radius, max_radius, clutter)
    return images, labels


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``[m]`` hue (turns), saturation and value in [0, 1] to ``[m, 3]`` RGB."""
    n = torch.tensor([5.0, 3.0, 1.0])
    k = (n.view(1, 3) + h.view(-1, 1) * 6) % 6
    return v.view(-1, 1) - v.view(-1, 1) * s.view(-1, 1) * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def _grey(bg: torch.Tensor) -> torch.Tensor:
    """The grey, slightly flattened version of backgrounds ``[m, 3, size, size]`` (grey scenes, disc pairs)."""
    return bg.mean(1, keepdim=True).expand_as(bg) * 0.7 + 0.15


def _clutter(bg: torch.Tensor, count: int, g: torch.Generator, grey: bool = False) -> torch.Tensor:
    """Paint ``count`` small distractors per image on ``bg`` ``[m, 3, size, size]``: discs, squares and bars of
    random colours (grey levels with ``grey``), 2-7% of the side in radius (far smaller than the objects, so that
    only the object tells the class)."""
    m, _, size, _ = bg.shape
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    for _ in range(count):
        radius = (torch.rand(m, generator=g) * 0.05 + 0.02) * size
        cx, cy = (torch.rand(m, 2, generator=g) * size).unbind(1)
        kind = torch.randint(0, 3, (m, 1, 1), generator=g)
        x = (coords.view(1, 1, size) - cx.view(m, 1, 1)) / radius.view(m, 1, 1)
        y = (coords.view(1, size, 1) - cy.view(m, 1, 1)) / radius.view(m, 1, 1)
        disc, square = x * x + y * y <= 1.0, torch.maximum(x.abs(), y.abs()) <= 0.8
        bar = (x.abs() <= 1.6) & (y.abs() <= 0.35)
        inside = torch.where(kind == 0, disc, torch.where(kind == 1, square, bar)).unsqueeze(1)
        colour = torch.rand(m, 1 if grey else 3, 1, 1, generator=g).expand(m, 3, 1, 1)
        bg = torch.where(inside, colour, bg)
    return bg


def render_shapes(n: int, size: int, num_classes: int, seed: int, min_radius: float = 0.12,
                  max_radius: float = 0.35, clutter: int = 0,
                  grey_scene: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`generate_shapes` plus where each object is: ``(images, labels, objects)`` with ``objects``
    float ``[n, 3]`` = (centre x, centre y, radius) in pixels; the object lies within the square of half-side
    ``radius`` around its centre.

    With ``clutter`` > 0 the background also holds that many small distractors (drawn under the object). With
    ``grey_scene`` the background and the clutter are grey and each class's objects have their own band of hues
    (a sixth of the colour wheel apart at most), vivid: the object is the only coloured thing in the image.
    """
    g = torch.Generator().manual_seed(int(seed))
    labels = torch.randint(0, num_classes, (n,), generator=g)
    images = torch.empty(n, 3, size, size, dtype=torch.uint8)
    objects = torch.empty(n, 3)
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    for lo in range(0, n, 256):
        hi = min(n, lo + 256)
        m = hi - lo
        bg, base = _backgrounds(m, size, g)
        lab = labels[lo:hi]
        if grey_scene:
            bg = _grey(bg)
            jitter = (torch.rand(m, generator=g) - 0.5) * min(1.0 / 6, 0.5 / num_classes)
            vivid = _hsv_to_rgb(lab / num_classes + jitter, torch.rand(m, generator=g) * 0.3 + 0.7,
                                torch.rand(m, generator=g) * 0.3 + 0.7)
        radius = (torch.rand(m, generator=g) * (max_radius - min_radius) + min_radius) * size
        cx = radius + torch.rand(m, generator=g) * (size - 2 * radius)
        cy = radius + torch.rand(m, generator=g) * (size - 2 * radius)
        colour = torch.rand(m, 3, generator=g)
        # Keep the object visible: a colour too close to the background's base is pushed half a cycle away.
        close = (colour - base.view(m, 3)).abs().amax(dim=1) < 0.35
        colour = torch.where(close.unsqueeze(1), (base.view(m, 3) + 0.5) % 1.0, colour)
        if grey_scene:
            colour = vivid
        x = (coords.view(1, 1, size) - cx.view(m, 1, 1)) / radius.view(m, 1, 1)
        y = (coords.view(1, size, 1) - cy.view(m, 1, 1)) / radius.view(m, 1, 1)
        inside = torch.zeros(m, 1, size, size, dtype=torch.bool)
        for c in range(num_classes):
            sel = (lab == c).nonzero().flatten()
            if len(sel):
                inside[sel, 0] = _SHAPES[c](x[sel], y[sel])
        if clutter:
            bg = _clutter(bg, clutter, g, grey_scene)
        img = torch.where(inside, colour.view(m, 3, 1, 1), bg)
        images[lo:hi] = (img * 255 + 0.5).to(torch.uint8)
        objects[lo:hi] = torch.stack([cx, cy, radius], dim=1)
    return images, labels, objects


class SyntheticShapes(Dataset):
    """Localized shapes on textured backgrounds, generated once at construction from a seed.

    Parameters
    ----------
    size : int
        Number of images.
    input_size : int
        Image side in pixels.
    num_classes : int
        Number of shape classes (at most ``len(SHAPE_NAMES)``).
    seed : int
        Seed of the set; ``split`` selects an independent stream, so train and val never share images.
    split : {"train", "val"}
    flip : bool
        Random horizontal flips (every shape class is closed under them).
    min_radius, max_radius : float
        Object radius range as a fraction of the image side.
    clutter : int
        Small distractors drawn on each background (0: none).
    grey_scene : bool
        Grey background and clutter, one band of vivid hues per class (see :func:`render_shapes`).

    Attributes ``images`` (uint8), ``labels`` and ``objects`` (centre x, centre y and radius of each object in
    pixels, see :func:`render_shapes`) hold the whole set.
    """

    DEFAULT_CLASSES = 10

    def __init__(self, size: int = 1000, input_size: int = 64, num_classes: int = 10, seed: int = 0,
                 split: str = "train", flip: bool = False, min_radius: float = 0.12, max_radius: float = 0.35,
                 clutter: int = 0, grey_scene: bool = False):
        if not 2 <= num_classes <= len(SHAPE_NAMES):
            raise LasnetError(f"synthetic data has 2..{len(SHAPE_NAMES)} classes, got {num_classes}")
        if split not in SPLIT_IDS:
            raise LasnetError(f"split must be one of {', '.join(SPLIT_IDS)}, got {split!r}")
        if size < 1:
            raise LasnetError(f"data set size must be >= 1, got {size}")
        self.num_classes = num_classes
        self.classes = list(SHAPE_NAMES[:num_classes])
        self.flip = flip
        stream = int(np.random.SeedSequence([int(seed), SPLIT_IDS[split]]).generate_state(1)[0])
        if not 0 < min_radius <= max_radius <= 0.5:
            raise LasnetError(f"object radius range must satisfy 0 < min <= max <= 0.5, got {min_radius}, {max_radius}")
        if clutter < 0:
            raise LasnetError(f"clutter must be >= 0, got {clutter}")
        self.images, self.labels, self.objects = render_shapes(size, input_size, num_classes, stream, min_radius,
                                                               max_radius, clutter, grey_scene)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.images[i].float() / 255.0
        if self.flip and torch.rand(()) < 0.5:
            img = img.flip(-1)
        return normalize(img), int(self.labels[i])


class ClutteredShapes(SyntheticShapes):
    """Large vivid objects (radius 18-28% of the side: 15-30% of the image) on grey, cluttered, textured scenes.

    Only the object tells the class (its shape and its band of hues); the clutter (small grey discs, squares and
    bars) is the same for all classes. The task of ``lasnet-tvm demo``: a spatially dynamic model should spend its
    computation on the object. Parameters as :class:`SyntheticShapes`.
    """

    def __init__(self, size: int = 1000, input_size: int = 128, num_classes: int = 4, seed: int = 0,
                 split: str = "train", flip: bool = False, min_radius: float = 0.18, max_radius: float = 0.28,
                 clutter: int = 24):
        super().__init__(size, input_size, num_classes, seed, split, flip, min_radius, max_radius, clutter,
                         grey_scene=True)


#: Where the blue disc lies from the red one in each class of :class:`DiscPairs` (image y grows downwards), and
#: the class each one becomes in a horizontally mirrored image.
PAIR_DIRECTIONS = ("left", "right", "above", "below")
_PAIR_STEPS = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])
_PAIR_MIRRORED = torch.tensor([1, 0, 2, 3])


def render_pairs(n: int, size: int, num_classes: int, seed: int, radius: tuple[float, float] = (0.07, 0.09),
                 distance: tuple[float, float] = (0.15, 0.21), tilt: float = math.pi / 9,
                 clutter: int = 24) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw ``n`` images of a red and a blue disc on a grey cluttered scene; the class is where the blue disc
    lies from the red one (:data:`PAIR_DIRECTIONS`).

    Every image holds the same two discs (radius a fraction ``radius`` of the side, centres ``distance`` of the
    side apart, the direction tilted by up to ``tilt`` radians), so no local colour or texture tells the class:
    only their arrangement does. Returns ``(images, labels, objects)`` as :func:`render_shapes`, with ``objects``
    the square around both discs (centre x, centre y, half-side in pixels). Deterministic in ``seed``.
    """
    g = torch.Generator().manual_seed(int(seed))
    labels = torch.randint(0, num_classes, (n,), generator=g)
    images = torch.empty(n, 3, size, size, dtype=torch.uint8)
    objects = torch.empty(n, 3)
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    for lo in range(0, n, 256):
        hi = min(n, lo + 256)
        m = hi - lo
        bg, _ = _backgrounds(m, size, g)
        scene = _clutter(_grey(bg), clutter, g, grey=True)
        r = (torch.rand(m, generator=g) * (radius[1] - radius[0]) + radius[0]) * size
        dist = (torch.rand(m, generator=g) * (distance[1] - distance[0]) + distance[0]) * size
        angle = (torch.rand(m, generator=g) - 0.5) * 2 * tilt
        step = _PAIR_STEPS[labels[lo:hi]]
        cos, sin = torch.cos(angle), torch.sin(angle)
        dx = (step[:, 0] * cos - step[:, 1] * sin) * dist
        dy = (step[:, 0] * sin + step[:, 1] * cos) * dist
        half = torch.maximum(dx.abs(), dy.abs()) / 2 + r
        mx = half + torch.rand(m, generator=g) * (size - 2 * half)
        my = half + torch.rand(m, generator=g) * (size - 2 * half)
        hue = torch.rand(m, generator=g) * 0.06
        s, v = torch.full((m,), 0.85), torch.full((m,), 0.9)
        for sign, colour in ((-1, _hsv_to_rgb(hue, s, v)), (1, _hsv_to_rgb(hue + 0.6, s, v))):  # red, then blue
            x = coords.view(1, 1, size) - (mx + sign * dx / 2).view(m, 1, 1)
            y = coords.view(1, size, 1) - (my + sign * dy / 2).view(m, 1, 1)
            inside = (x * x + y * y <= (r * r).view(m, 1, 1)).unsqueeze(1)
            scene = torch.where(inside, colour.view(m, 3, 1, 1), scene)
        images[lo:hi] = (scene * 255 + 0.5).to(torch.uint8)
        objects[lo:hi] = torch.stack([mx, my, half], dim=1)
    return images, labels, objects


class DiscPairs(Dataset):
    """A red and a blue disc on a grey cluttered scene, classed by where the blue disc lies from the red one
    (see :func:`render_pairs`). The task of ``lasnet-tvm demo``: the class is in the discs' arrangement, which
    only convolutions spanning both discs can see, so a spatially dynamic model should compute there.

    Parameters as :class:`SyntheticShapes` (``num_classes`` 2..4: left/right, then above, below); with ``flip``
    a mirrored image swaps the left and right classes.
    """

    DEFAULT_CLASSES = len(PAIR_DIRECTIONS)

    def __init__(self, size: int = 1000, input_size: int = 128, num_classes: int = 4, seed: int = 0,
                 split: str = "train", flip: bool = False):
        if not 2 <= num_classes <= len(PAIR_DIRECTIONS):
            raise LasnetError(f"disc pairs have 2..{len(PAIR_DIRECTIONS)} classes, got {num_classes}")
        if split not in SPLIT_IDS:
            raise LasnetError(f"split must be one of {', '.join(SPLIT_IDS)}, got {split!r}")
        if size < 1:
            raise LasnetError(f"data set size must be >= 1, got {size}")
        self.num_classes = num_classes
        self.classes = [f"blue {d}" for d in PAIR_DIRECTIONS[:num_classes]]
        self.flip = flip
        stream = int(np.random.SeedSequence([int(seed), SPLIT_IDS[split]]).generate_state(1)[0])
        self.images, self.labels, self.objects = render_pairs(size, input_size, num_classes, stream)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img, label = self.images[i].float() / 255.0, int(self.labels[i])
        if self.flip and torch.rand(()) < 0.5:
            img, label = img.flip(-1), int(_PAIR_MIRRORED[label])
        return normalize(img), label


SYNTHETIC_SETS = {"synthetic": SyntheticShapes, "clutter": ClutteredShapes, "pairs": DiscPairs}


# -- image folders -------------------------------------------------------------------------------------------
def scan_folder(root: str | Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Classes (sorted sub-folder names) and ``(file, label)`` pairs of an image folder.

    Raises
    ------
    LasnetError
        Missing folder, no class sub-folders, or a class folder without images.
    """
    root = Path(root)
    if not root.is_dir():
        raise LasnetError(f"{root}: no such folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise LasnetError(f"{root}: no class sub-folders (expected one folder of images per class)")
    samples = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise LasnetError(f"{root / name}: class folder holds no .jpg/.jpeg/.png images")
        samples.extend((f, label) for f in files)
    return classes, samples


class ImageFolder(Dataset):
    """Images in one folder per class, resized to ``input_size`` and ImageNet-normalized.

    Training (``train=True``): random resized crop (area ``scale``, aspect 3/4..4/3) and horizontal flip,
    drawn from torch's global RNG. Evaluation: resize the short side to ``input_size / 0.875``, centre crop.
    """

    def __init__(self, samples: Sequence[tuple[Path, int]], classes: Sequence[str], input_size: int,
                 train: bool = False, scale: tuple[float, float] = (0.25, 1.0)):
        self.samples = list(samples)
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.input_size = input_size
        self.train = train
        self.scale = scale

    @classmethod
    def from_folder(cls, root: str | Path, input_size: int, train: bool = False) -> "ImageFolder":
        classes, samples = scan_folder(root)
        return cls(samples, classes, input_size, train)

    def __len__(self) -> int:
        return len(self.samples)

    def _crop_box(self, w: int, h: int) -> tuple[float, float, float, float]:
        if self.train:
            area = w * h
            for _ in range(10):
                a = area * float(torch.empty(()).uniform_(*self.scale))
                ratio = math.exp(float(torch.empty(()).uniform_(math.log(3 / 4), math.log(4 / 3))))
                cw, ch = math.sqrt(a * ratio), math.sqrt(a / ratio)
                if cw <= w and ch <= h:
                    left = float(torch.rand(())) * (w - cw)
                    top = float(torch.rand(())) * (h - ch)
                    return left, top, left + cw, top + ch
        side = min(w, h) * (0.875 if not self.train else 1.0)
        left, top = (w - side) / 2, (h - side) / 2
        return left, top, left + side, top + side

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
        except OSError as e:
            raise LasnetError(f"{path}: cannot read image ({e})") from None
        box = self._crop_box(*im.size)
        im = im.resize((self.input_size, self.input_size), Image.BILINEAR, box=box)
        x = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
        if self.train and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return normalize(x), label


def folder_splits(root: str | Path, input_size: int, seed: int = 0,
                  val_fraction: float = 0.2) -> tuple[ImageFolder, ImageFolder]:
    """Train and val sets of an image folder.

    ``root`` holds either ``train/`` and ``val/`` (each one folder per class, same classes), or the class
    folders themselves, which are then split per class by ``seed`` (``val_fraction`` of each class to val,
    at least one image kept for training).
    """
    root = Path(root)
    if not root.is_dir():
        raise LasnetError(f"{root}: no such folder")
    if (root / "train").is_dir() and (root / "val").is_dir():
        classes, train = scan_folder(root / "train")
        val_classes, val = scan_folder(root / "val")
        if val_classes != classes:
            raise LasnetError(f"{root}: train/ and val/ have different class folders")
    else:
        classes, samples = scan_folder(root)
        g = torch.Generator().manual_seed(int(seed))
        train, val = [], []
        for label in range(len(classes)):
            files = [s for s in samples if s[1] == label]
            order = torch.randperm(len(files), generator=g).tolist()
            n_val = min(len(files) - 1, int(round(len(files) * val_fraction)))
            val += [files[j] for j in order[:n_val]]
            train += [files[j] for j in order[n_val:]]
        if not val:
            raise LasnetError(f"{root}: too few images to split off a validation set")
    return ImageFolder(train, classes, input_size, train=True), ImageFolder(val, classes, input_size, train=False)
