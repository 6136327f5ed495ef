"""The end-to-end demo: train a small LAS model on synthetic disc pairs on clutter, compile it for this CPU, check
it against PyTorch on the held-out split, draw its masks and measure its speedup over the static model compiled
the same way and over PyTorch eager.

Everything is measured in this process: medians of repeated, interleaved runs on the same images.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .records import machine_info, versions, write_json
from .timing import time_interleaved
from .checkpoint import load_checkpoint
from .compiler import CompiledModel, build_target, compile_model
from .errors import LasnetError
from .train.data import SYNTHETIC_SETS
from .visualize import plot_mask_rows

# A shallow LAS-ResNet (one bottleneck block per stage, quarter width) on 128 px disc pairs: the class is where the
# blue disc lies from the red one, which only the deeper stages' 3x3 convs can see (the dense stem, downsample
# and classifier path holds every colour at every place, but not the arrangement). Batches of 16 reach full accuracy
# in three static epochs; the FLOPs target 0.5 leaves the LAS blocks about a tenth of their computation (the dense
# parts cost 0.46 of the static FLOPs), and maskers at 3x the backbone's rate learn where it pays in three dynamic
# epochs (at 0.3x the stage-1 masks stay on the background at half rate).
DEMO_TRAIN = dict(arch="las_resnet50", depths=(1, 1, 1, 1), width_mult=0.25, input_size=128, granularity="4-4-2-1",
                  num_classes=4, data="pairs", train_size=1000, val_size=300, static_epochs=3, epochs=6,
                  batch_size=16, lr=0.1, warmup_epochs=0.3, target=0.5, masker_lr_mult=3.0)
MASK_FIGURE_IMAGES = 4


@dataclass
class DemoResult:
    """What the demo measured (milliseconds per image: median over repeated, interleaved passes)."""

    model: str
    accuracy: float  # compiled LAS model on the held-out split
    chance: float
    held_out: int  # held-out images checked (accuracy, max_rel_err, rate)
    rate: float  # mean activation rate over blocks and held-out images
    mask_on_object: float  # share of the active mask area on the objects' bounding squares (all stages)
    object_area: float  # share of the image the objects' bounding squares cover (a mask blind to objects gets this)
    mask_on_object_per_stage: list  # mask_on_object of each stage's first block
    max_rel_err: float  # max |logit difference| / max(1, max |logit|) of compiled LAS vs PyTorch
    las_ms: float
    static_ms: float
    torch_ms: float
    speedup_vs_static: float  # ratio of the medians
    paired_speedup_vs_static: float  # median of the per-round ratios
    images: int  # images per timed pass
    repeats: int  # timed passes
    compile_s: dict = field(default_factory=dict)
    train_s: float | None = None
    masks_png: str | None = None

    @property
    def speedup_vs_torch(self) -> float:
        return self.torch_ms / self.las_ms

    def summary(self) -> str:
        rows = [
            ("held-out accuracy (compiled LAS)", f"{self.accuracy:.3f}  (chance {self.chance:.3f}, "
                                                 f"{self.held_out} images)"),
            ("mean activation rate", f"{self.rate:.2f}"),
            ("mask on the object", f"{self.mask_on_object:.2f} of the active area (objects cover "
                                   f"{self.object_area:.2f} of the image); per stage "
                                   + " | ".join(f"{v:.2f}" for v in self.mask_on_object_per_stage)),
            ("max rel. logit error vs PyTorch", f"{self.max_rel_err:.1e}"),
            ("ms/image: LAS | static | PyTorch", f"{self.las_ms:.2f} | {self.static_ms:.2f} | {self.torch_ms:.2f}"
                                                  f"  (batch 1, median of {self.repeats} x {self.images} images)"),
            ("speedup over static (same compiler)", f"{self.speedup_vs_static:.2f}x  (paired "
                                                     f"{self.paired_speedup_vs_static:.2f}x)"),
            ("speedup over PyTorch eager", f"{self.speedup_vs_torch:.2f}x"),
            ("compile s: LAS | static", f"{self.compile_s.get('las', 0):.1f} | {self.compile_s.get('static', 0):.1f}"),
        ]
        if self.train_s is not None:
            rows.append(("train s", f"{self.train_s:.1f}"))
        if self.masks_png:
            rows.append(("masks", self.masks_png))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

    def record(self) -> dict:
        """The JSON record (``demo.json``): the figures plus machine, versions and date."""
        return {**asdict(self), "speedup_vs_torch": self.speedup_vs_torch, "machine": machine_info(),
                "versions": versions(), "threads": torch.get_num_threads(),
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def train_demo_model(output: str | Path, progress: bool = True):
    """Train the demo model (see :data:`DEMO_TRAIN`) into ``output``; returns the :class:`TrainResult`."""
    from .train.trainer import TrainConfig, train

    return train(TrainConfig(output=str(output), progress=progress, **DEMO_TRAIN))


def held_out_set(ckpt: dict, size: int):
    """The held-out (``val``) split of the synthetic set the checkpoint was trained on (the demo's set when the
    checkpoint does not say), ``size`` images."""
    meta = ckpt.get("meta") or {}
    name = meta.get("dataset", DEMO_TRAIN["data"])
    if name not in SYNTHETIC_SETS:
        raise LasnetError(f"the demo checks models trained on synthetic data ({', '.join(SYNTHETIC_SETS)}), "
                          f"this one was trained on {meta.get('data', name)}")
    return SYNTHETIC_SETS[name](size, int(ckpt["input_size"]), int(ckpt["num_classes"]), int(meta.get("seed", 0)),
                                "val")


def mask_on_object(model, x: torch.Tensor, objects: torch.Tensor) -> tuple[float, float, list[float]]:
    """Where the masks sit: share of the active mask area on the objects' bounding squares (first block of each
    stage, pooled over stages and images), share of the image those squares cover (``objects``: centre x,
    centre y, half-side in pixels; a mask blind to the objects scores this share) and the first share per stage
    (0 for a stage whose mask is off everywhere)."""
    with torch.no_grad():
        _, stats = model(x, return_stats=True)
    size = x.shape[-1]
    c = torch.arange(size, dtype=torch.float32) + 0.5
    half = objects[:, 2, None, None]
    box = (((c.view(1, 1, -1) - objects[:, 0, None, None]).abs() <= half)
            & ((c.view(1, -1, 1) - objects[:, 1, None, None]).abs() <= half))
    on, active, per_stage = 0.0, 0.0, []
    for block, mask in zip(model.blocks, stats["masks"]):
        s = block.spec
        if s.index:
            continue
        up = mask[:, 0].repeat_interleave(s.S, 1).repeat_interleave(s.S, 2)[:, : s.out_size, : s.out_size]
        near = torch.arange(size) * s.out_size // size
        full = up[:, near][:, :, near]
        stage_on, stage_active = float((full * box).sum()), float(full.sum())
        per_stage.append(stage_on / stage_active if stage_active else 0.0)
        on += stage_on
        active += stage_active
    return (on / active if active else 0.0), float(box.float().mean()), per_stage


def run_demo(model_path: str | Path, images: int = 8, repeats: int = 30, held_out: int = 200,
             workdir: str | Path | None = None, threads: int | None = None, train_s: float | None = None) -> DemoResult:
    """Compile ``model_path`` (LAS and static) for this CPU, check it against PyTorch on ``held_out`` images of
    its held-out split, time LAS, static and PyTorch on ``images`` of them (``repeats`` interleaved passes), and,
    with ``workdir``, write ``masks.png`` and ``demo.json`` there."""
    if threads:
        torch.set_num_threads(threads)
    model, ckpt = load_checkpoint(model_path)
    data = held_out_set(ckpt, max(held_out, images, MASK_FIGURE_IMAGES))
    x = torch.stack([data[i][0] for i in range(len(data))])
    labels = data.labels.numpy()

    target = build_target("llvm")
    compiled, compile_s = {}, {}
    for name, static in (("las", False), ("static", True)):
        r = compile_model(model, target, static=static, source=str(model_path))
        compiled[name] = CompiledModel.from_executable(r.executable, r.manifest)
        compile_s[name] = r.manifest["compile_seconds"]

    las = compiled["las"].run(x.numpy())
    with torch.no_grad():
        ref = model(x).numpy()
    err = float(np.abs(las.logits - ref).max() / max(1.0, np.abs(ref).max()))
    on_object, object_area, on_object_stages = mask_on_object(model, x, data.objects)

    static_model = model.static_counterpart()

    def torch_static(xi):
        with torch.no_grad():
            return static_model(xi)

    singles = [x[i : i + 1] for i in range(images)]
    arrays = [v.numpy() for v in singles]
    calls = {"las": (compiled["las"]._call, arrays), "static": (compiled["static"]._call, arrays),
             "torch": (torch_static, singles)}  # name: (one image's call, the images)
    # each turn starts with one untimed image, absorbing the previous runtime's still-spinning threads
    t = time_interleaved({k: (lambda f=f, xs=xs: [f(v) for v in xs]) for k, (f, xs) in calls.items()},
                         repeats=repeats, warmup=1, batch=1, settle={k: (lambda f=f, v=xs[0]: f(v))
                                                                     for k, (f, xs) in calls.items()})
    las_ms, static_ms, torch_ms = (t[k]["median_ms"] / images for k in ("las", "static", "torch"))
    paired = float(np.median(np.array(t["static"]["samples_ms"]) / np.array(t["las"]["samples_ms"])))

    masks_png = None
    if workdir is not None:
        k = MASK_FIGURE_IMAGES
        shown = data.images[:k].permute(0, 2, 3, 1).numpy()
        titles = [f"{data.classes[labels[i]]} (pred. {data.classes[int(las.logits[i].argmax())]})" for i in range(k)]
        masks_png = str(Path(workdir) / "masks.png")
        plot_mask_rows(model, x[:k], shown, masks_png, titles)
    result = DemoResult(
        model=str(model_path), accuracy=float((las.logits.argmax(1) == labels).mean()),
        chance=1.0 / int(ckpt["num_classes"]), held_out=len(labels), rate=float(las.rates.mean()),
        mask_on_object=on_object, object_area=object_area, mask_on_object_per_stage=on_object_stages, max_rel_err=err, las_ms=las_ms, static_ms=static_ms,
        torch_ms=torch_ms, speedup_vs_static=static_ms / las_ms, paired_speedup_vs_static=paired, images=images,
        repeats=repeats, compile_s=compile_s, train_s=train_s, masks_png=masks_png,
    )
    if workdir is not None:
        write_json(Path(workdir) / "demo.json", result.record())
    return result
