"""Synthetic shapes and image-folder data sets."""

import numpy as np
import pytest
import torch
from PIL import Image

from lasnet_tvm.errors import LasnetError
from lasnet_tvm.train.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SHAPE_NAMES,
    _SHAPES,
    ImageFolder,
    SyntheticShapes,
    folder_splits,
    scan_folder,
)


def test_synthetic_is_deterministic_and_splits_differ():
    a = SyntheticShapes(40, 48, 6, seed=3, split="train")
    b = SyntheticShapes(40, 48, 6, seed=3, split="train")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    val = SyntheticShapes(40, 48, 6, seed=3, split="val")
    other = SyntheticShapes(40, 48, 6, seed=4, split="train")
    assert not torch.equal(a.images, val.images)
    assert not torch.equal(a.images, other.images)


@pytest.mark.parametrize("size", [33, 64])
def test_synthetic_shapes_and_labels(size):
    ds = SyntheticShapes(30, size, 5, seed=0)
    x, y = ds[7]
    assert x.shape == (3, size, size) and x.dtype == torch.float32
    assert 0 <= y < 5 and ds.num_classes == 5 and len(ds) == 30
    assert set(ds.labels.tolist()) <= set(range(5))
    # ImageNet normalization of the stored uint8 image.
    raw = ds.images[7].float() / 255
    want = (raw - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(x, want, atol=1e-6)


def test_synthetic_object_is_localized():
    """The object is a region of one colour covering a small part of the image, and differs per class."""
    ds = SyntheticShapes(64, 64, 10, seed=1)
    fractions = []
    for img in ds.images:
        flat = img.reshape(3, -1).T
        _, counts = torch.unique(flat, dim=0, return_counts=True)
        fractions.append(counts.max().item() / flat.shape[0])  # the object's colour is the most common one
    fractions = np.array(fractions)
    assert fractions.min() > 0.01 and fractions.max() < 0.45


def test_shape_classes_are_distinct():
    lin = torch.linspace(-1.2, 1.2, 97)
    y, x = torch.meshgrid(lin, lin, indexing="ij")
    masks = [f(x, y) for f in _SHAPES]
    assert len(masks) == len(SHAPE_NAMES)
    for i, m in enumerate(masks):
        assert 0.05 < m.float().mean() < 0.8, SHAPE_NAMES[i]
        for j in range(i):
            assert (m ^ masks[j]).float().mean() > 0.02, (SHAPE_NAMES[i], SHAPE_NAMES[j])


def test_synthetic_rejects_bad_arguments():
    with pytest.raises(LasnetError, match="classes"):
        SyntheticShapes(10, 32, len(SHAPE_NAMES) + 1)
    with pytest.raises(LasnetError, match="split"):
        SyntheticShapes(10, 32, 4, split="test")


def _write_folder(root, counts, colours=((255, 0, 0), (0, 0, 255))):
    for c, n in enumerate(counts):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        for i in range(n):
            ext = ".png" if i % 2 else ".jpg"
            Image.new("RGB", (40 + 7 * i, 30 + 5 * i), colours[c]).save(d / f"img{i}{ext}")
    return root


def test_image_folder_loads_and_normalizes(tmp_path):
    root = _write_folder(tmp_path / "data", [3, 2])
    classes, samples = scan_folder(root)
    assert classes == ["class0", "class1"] and len(samples) == 5
    ds = ImageFolder(samples, classes, 24, train=False)
    x, y = ds[0]
    assert x.shape == (3, 24, 24) and y == 0
    want = (torch.tensor([1.0, 0.0, 0.0]) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(x[:, 12, 12], want, atol=0.05)  # JPEG keeps a solid colour almost exactly
    x, y = ds[4]
    assert y == 1
    aug = ImageFolder(samples, classes, 24, train=True)
    torch.manual_seed(0)
    assert aug[1][0].shape == (3, 24, 24)


def test_folder_split_by_seed_and_subfolders(tmp_path):
    root = _write_folder(tmp_path / "flat", [5, 5])
    tr, va = folder_splits(root, 16, seed=1, val_fraction=0.2)
    assert len(tr) == 8 and len(va) == 2 and tr.train and not va.train
    assert {s[1] for s in va.samples} == {0, 1}
    assert not {s[0] for s in tr.samples} & {s[0] for s in va.samples}
    tr2, va2 = folder_splits(root, 16, seed=1, val_fraction=0.2)
    assert va2.samples == va.samples
    split = tmp_path / "split"
    _write_folder(split / "train", [2, 2])
    _write_folder(split / "val", [1, 1])
    tr, va = folder_splits(split, 16)
    assert (len(tr), len(va), tr.num_classes) == (4, 2, 2)


def test_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(LasnetError, match="nowhere"):
        folder_splits(tmp_path / "nowhere", 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LasnetError, match="no class sub-folders"):
        scan_folder(tmp_path / "empty")
    root = _write_folder(tmp_path / "d", [2, 0])
    with pytest.raises(LasnetError, match="class1"):
        scan_folder(root)


def test_generate_shapes_without_clutter_is_render_shapes():
    from lasnet_tvm.train.data import generate_shapes, render_shapes

    images, labels = generate_shapes(20, 40, 4, seed=5)
    images2, labels2, objects = render_shapes(20, 40, 4, seed=5)
    assert torch.equal(images, images2) and torch.equal(labels, labels2)
    assert objects.shape == (20, 3)


def test_cluttered_objects_cover_15_to_30_percent_and_only_the_object_differs_by_class():
    from lasnet_tvm.train.data import SYNTHETIC_SETS, ClutteredShapes

    assert SYNTHETIC_SETS["clutter"] is ClutteredShapes
    ds = ClutteredShapes(64, 128, 4, seed=0, split="val")
    again = ClutteredShapes(64, 128, 4, seed=0, split="val")
    assert torch.equal(ds.images, again.images) and torch.equal(ds.objects, again.objects)
    cx, cy, r = ds.objects.unbind(1)
    assert ((cx - r >= 0) & (cx + r <= 128) & (cy - r >= 0) & (cy + r <= 128)).all()
    box_share = (2 * r / 128) ** 2  # the object's bounding square
    assert 0.12 <= box_share.min() and box_share.max() <= 0.32
    # Only the object is coloured: every pixel off the object's bounding square is grey (R = G = B).
    c = torch.arange(128) + 0.5
    half = 1.05 * r.view(-1, 1, 1)  # the triangles reach 1.02 r sideways
    disc = ((c.view(1, 1, -1) - cx.view(-1, 1, 1)).abs() <= half) & ((c.view(1, -1, 1) - cy.view(-1, 1, 1)).abs() <= half)
    img = ds.images.int()
    grey = (img[:, 0] == img[:, 1]) & (img[:, 1] == img[:, 2])
    assert grey[~disc].all() and (~grey[disc]).float().mean() > 0.3
    # Clutter: the scene holds more distinct grey levels than without it.
    bare = SyntheticShapes(64, 128, 4, seed=0, split="val", min_radius=0.18, max_radius=0.28, grey_scene=True)
    assert ds.images[:, 0][~disc].float().std() > bare.images[:, 0][~disc].float().std()
    with pytest.raises(LasnetError, match="clutter"):
        SyntheticShapes(4, 32, 4, clutter=-1)


def _colour_centres(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centroids (x, y) of the red and of the blue pixels of uint8 images ``[n, 3, H, W]``, and their masks."""
    img = images.int()
    red = (img[:, 0] > img[:, 2] + 60) & (img[:, 0] > img[:, 1] + 60)
    blue = (img[:, 2] > img[:, 0] + 60) & (img[:, 2] > img[:, 1] + 30)
    ys, xs = torch.meshgrid(torch.arange(img.shape[2]) + 0.5, torch.arange(img.shape[3]) + 0.5, indexing="ij")

    def centre(m):
        n = m.sum((1, 2)).clamp(min=1)
        return torch.stack([(m * xs).sum((1, 2)) / n, (m * ys).sum((1, 2)) / n], 1)

    return centre(red), centre(blue), red, blue


def test_disc_pairs_are_classed_by_where_the_blue_disc_lies():
    from lasnet_tvm.train.data import PAIR_DIRECTIONS, SYNTHETIC_SETS, DiscPairs

    assert SYNTHETIC_SETS["pairs"] is DiscPairs
    ds = DiscPairs(64, 128, 4, seed=0, split="val")
    assert torch.equal(ds.images, DiscPairs(64, 128, 4, seed=0, split="val").images)
    assert not torch.equal(ds.images, DiscPairs(64, 128, 4, seed=0, split="train").images)
    assert set(ds.labels.tolist()) == {0, 1, 2, 3} and ds.classes == [f"blue {d}" for d in PAIR_DIRECTIONS]
    red_c, blue_c, red, blue = _colour_centres(ds.images)
    assert (red.sum((1, 2)) > 100).all() and (blue.sum((1, 2)) > 100).all()  # both discs in every image
    d = blue_c - red_c
    horizontal = d[:, 0].abs() > d[:, 1].abs()
    want = torch.where(horizontal, (d[:, 0] > 0).long(), 2 + (d[:, 1] > 0).long())  # left, right, above, below
    assert torch.equal(want, ds.labels)
    # The object square holds both discs; outside it the scene is grey.
    cx, cy, half = ds.objects.unbind(1)
    c = torch.arange(128) + 0.5
    box = ((c.view(1, 1, -1) - cx.view(-1, 1, 1)).abs() <= half.view(-1, 1, 1)) & \
          ((c.view(1, -1, 1) - cy.view(-1, 1, 1)).abs() <= half.view(-1, 1, 1))
    assert not (red & ~box).any() and not (blue & ~box).any()
    img = ds.images.int()
    assert ((img[:, 0] == img[:, 1]) & (img[:, 1] == img[:, 2]))[~box].all()
    assert ((cx - half >= 0) & (cx + half <= 128) & (cy - half >= 0) & (cy + half <= 128)).all()
    assert 0.05 < float(box.float().mean()) < 0.2


def test_disc_pairs_mirrored_swap_left_and_right():
    from lasnet_tvm.train.data import DiscPairs, normalize

    ds = DiscPairs(16, 64, 4, seed=1, split="train", flip=True)
    seen = set()
    torch.manual_seed(0)
    for i in range(len(ds)):
        x, label = ds[i]
        plain = normalize(ds.images[i].float() / 255.0)
        mirrored = not torch.equal(x, plain)
        if mirrored:
            assert torch.equal(x, plain.flip(-1))
        want = {0: 1, 1: 0}.get(int(ds.labels[i]), int(ds.labels[i])) if mirrored else int(ds.labels[i])
        assert label == want
        seen.add(mirrored)
    assert seen == {True, False}
    with pytest.raises(LasnetError, match="2..4 classes"):
        DiscPairs(4, 64, 5)


def test_training_on_disc_pairs_defaults_to_their_four_classes(tmp_path):
    from lasnet_tvm.train.trainer import TrainConfig, build_data

    train_ds, val_ds, n, name = build_data(TrainConfig(data="pairs", input_size=64, train_size=8, val_size=4))
    assert n == 4 and len(train_ds) == 8 and len(val_ds) == 4 and "pairs" in name
