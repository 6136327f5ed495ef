"""``lasnet-tvm bench``: benchmarks of blocks (``block``, ``fusion``, ``rate``, ``granularity``, ``masker``) and
whole models (``model``, ``compare``); the drivers live in :mod:`lasnet_tvm.benchmarks`."""

from __future__ import annotations

import os

import click

from ..errors import LasnetError
from .types import COUNT, GRANULARITY, MASKER, NON_NEGATIVE, POSITIVE, RATE, RATES


@click.group()
def bench():
    """Benchmarks of compiled LAS blocks and models."""


def _ints(text: str | None, what: str, n: int | None = None):
    if text is None:
        return None
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise LasnetError(f"{what} {text!r}: expected comma-separated integers") from None
    if n is not None and len(vals) != n:
        raise LasnetError(f"{what} {text!r}: expected {n} values")
    return tuple(vals)


@bench.command("block")
@click.option("--arch", default="las_resnet50", show_default=True, help="Backbone whose block is measured.")
@click.option("--stage", default=1, show_default=True, type=click.IntRange(1, 4), help="Stage (1..4); its first identity block.")
@click.option("--channels", default=None, help="Explicit C_in,C_mid,C_out (overrides --arch/--stage).")
@click.option("--size", default=None, type=COUNT, help="Input feature size with --channels.")
@click.option("--stride", default=1, show_default=True, type=COUNT, help="Stride with --channels.")
@click.option("--S", "S", default=4, show_default=True, type=COUNT, help="Mask granularity.")
@click.option("--rates", default="0.25,0.5,0.75,1.0", show_default=True, help="Activation rates.")
@click.option("--ablation-rate", default=0.6, show_default=True, type=RATE, help="Rate of the fusion ablation.")
@click.option("--repeats", default=50, show_default=True, type=COUNT, help="Timed rounds per variant.")
@click.option("--threads", default=2, show_default=True, type=COUNT, help="torch and TVM threads.")
@click.option("--target", default="llvm", show_default=True, help="TVM target (CPU only for now).")
@click.option("--masker", default="fused", show_default=True,
              help="Masker placements of the fused block timed at each rate, comma-separated: fused, separate.")
@click.option("--out", "out", default=None, type=click.Path(dir_okay=False), help="JSON result file.")
def block(arch, stage, channels, size, stride, S, rates, ablation_rate, repeats, threads, target, masker, out):
    """Static vs dynamic LAS block (TVM and PyTorch) and the fusion ablation (paper Table 1)."""
    os.environ.setdefault("TVM_NUM_THREADS", str(threads))
    from ..benchmarks import block as B
    from ..fsutil import check_writable
    from ..records import write_json

    if out:
        check_writable(out, "results")

    try:
        rate_list = tuple(float(r) for r in rates.split(",") if r.strip())
    except ValueError:
        raise LasnetError(f"--rates {rates!r}: expected comma-separated numbers") from None
    if not rate_list or any(not 0 <= r <= 1 for r in rate_list):
        raise LasnetError(f"--rates {rates!r}: every rate must lie in [0, 1]")
    from ..block_plan import MaskerPlacement

    maskers = tuple(MaskerPlacement.parse(m.strip()) for m in masker.split(",") if m.strip())
    spec = B.block_spec(arch, stage, _ints(channels, "--channels", 3), size, stride, S)
    res = B.run(spec, rate_list, repeats, ablation_rate, target, threads, log=lambda m: click.echo(m, err=True),
                maskers=maskers)
    click.echo(B.format_table(res))
    if out:
        write_json(out, res)
        click.echo(f"wrote {out}")


@bench.command("model")
@click.option("--model", "model_path", default=None, help="A model.pt; default: random weights at --rate.")
@click.option("--arch", default="las_resnet50", show_default=True)
@click.option("--granularity", "-g", type=GRANULARITY, default="4-4-2-1", show_default=True)
@click.option("--input-size", type=COUNT, default=224, show_default=True)
@click.option("--width-mult", type=POSITIVE, default=1.0, show_default=True)
@click.option("--rate", type=RATE, default=0.5, show_default=True, help="Activation rate the random model's maskers aim at.")
@click.option("--rates", type=RATES, default=None,
              help="Several rates in one run, e.g. 0,0.25,0.5,1: one compiled LAS model per rate (same weights), "
              "timed with the static variants in the same rounds. Replaces --rate.")
@click.option("--images", type=COUNT, default=4, show_default=True, help="Synthetic images (timings are per image).")
@click.option("--repeats", type=COUNT, default=5, show_default=True)
@click.option("--threads", type=COUNT, default=2, show_default=True)
@click.option("--schedules", default=None,
              help="Tuned schedules for both compiled models: a `lasnet-tvm tune` folder, or `shipped` (this "
              "CPU's under schedules/). Default: default schedules.")
@click.option("--save-model", default=None, type=click.Path(dir_okay=False),
              help="Also write the benchmarked model (random weights, maskers set to --rate) as a model.pt.")
@click.option("--breakdown", is_flag=True,
              help="Also profile both compiled models per kernel (VM instrumentation) into the JSON.")
@click.option("--baseline", "baselines", multiple=True,
              help="Also the static model in this runtime: onnxruntime or openvino (repeatable or comma list; "
              "pip install 'lasnet-tvm[bench]'), exported to ONNX and run with TVM's thread count.")
@click.option("--masker", type=MASKER, default="fused", show_default=True,
              help="Masker placement of the compiled LAS models (as `compile --masker`; auto: per block the one "
              "this machine's profile prices lower at each model's rate).")
@click.option("--out", type=click.Path(), required=True, help="JSON file to write (and a PNG beside it).")
def model(model_path, arch, granularity, input_size, width_mult, rate, rates, images, repeats, threads, schedules,
          save_model, breakdown, baselines, masker, out):
    """Whole network: compiled LAS vs compiled static vs PyTorch (static, LAS dense, sparse), and optionally
    the static model in ONNX Runtime / OpenVINO."""
    from ..benchmarks import model as bm
    from ..benchmarks.baselines import check_available
    from ..benchmarks.plots import plot_model
    from ..records import write_json

    from ..fsutil import check_writable

    baselines = check_available([b.strip() for v in baselines for b in v.split(",") if b.strip()])
    os.environ.setdefault("TVM_NUM_THREADS", str(threads))
    check_writable(out, "results")
    if save_model:
        check_writable(save_model, "model")
    net = None
    if model_path is not None and save_model:
        raise LasnetError("--save-model writes the random model; with --model there is none to write")
    if model_path is not None:
        from ..checkpoint import load_checkpoint

        net, _ = load_checkpoint(model_path)
    from ..tuning import schedules_for

    # no --schedules: default schedules for both models, as the help says (the shipped ones only when asked)
    database = schedules_for(None if schedules == "shipped" else schedules, use_shipped=schedules == "shipped")
    if schedules == "shipped" and database is None:
        raise LasnetError("--schedules shipped: no schedules are shipped for this CPU (see schedules/)")
    if rates is not None:
        rates = rates if isinstance(rates, list) else [rates]
        if model_path is not None:
            raise LasnetError("--rates sets the random model's maskers; a --model has the rate its maskers give")
    res = bm.run(arch, granularity, input_size, width_mult, rate, net, images, repeats, threads, database,
                 breakdown, save_model, baselines, rates, masker)
    write_json(out, res)
    png = plot_model(res, os.path.splitext(out)[0] + ".png")
    click.echo(bm.format_table(res))
    click.echo(f"wrote {out} and {png}")


@bench.command("compare")
@click.argument("libraries", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--input", "input_path", default=None, type=click.Path(dir_okay=False),
              help="Images, .npy [N, 3, H, W] (checked as by `lasnet-tvm run`); default: bench model's synthetic "
              "images (--images of them).")
@click.option("--images", type=COUNT, default=4, show_default=True, help="Synthetic images without --input.")
@click.option("--repeats", type=COUNT, default=25, show_default=True, help="Interleaved passes over the images.")
@click.option("--threads", type=COUNT, default=2, show_default=True, help="TVM threads.")
@click.option("--model", "model_path", default=None, type=click.Path(dir_okay=False),
              help="The model.pt the libraries were compiled from: check each against it in PyTorch first.")
@click.option("--out", type=click.Path(), required=True, help="JSON file to write.")
def compare(libraries, input_path, images, repeats, threads, model_path, out):
    """Compiled libraries against each other, timed interleaved in one process on the same images (e.g. one
    model.pt compiled before and after a change, or LAS against --static)."""
    from ..benchmarks import compare as bc
    from ..fsutil import check_writable
    from ..records import write_json
    from ..runner import load_input

    os.environ.setdefault("TVM_NUM_THREADS", str(threads))
    check_writable(out, "results")
    x = load_input(input_path) if input_path else None
    net = None
    if model_path is not None:
        from ..checkpoint import load_checkpoint

        net, _ = load_checkpoint(model_path)
    res = bc.run(list(libraries), x, images, repeats, net)
    write_json(out, res)
    click.echo(bc.format_table(res))
    click.echo(f"wrote {out}")


# ---------------------------------------------------------------------------------------------------------
# bench fusion / rate / granularity (paper Table 1, Fig. 4/5, Fig. 6)

QUICK = dict(input_size=64, width_mult=0.125, repeats=3, kernel_repeat=2, min_repeat_ms=1)
FULL = dict(input_size=224, width_mult=1.0, kernel_repeat=5, min_repeat_ms=5)


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise LasnetError(f"{what} {text!r}: expected comma-separated numbers") from None
    if not vals:
        raise LasnetError(f"{what} {text!r}: expected at least one value")
    return vals


def _sweep_options(arch: str, stages: str, repeats: int, S: str, rates: str,
                   measured: str = "the first identity block of each is measured"):
    """Options shared by fusion, rate, granularity and masker."""
    opts = [
        click.option("--arch", default=arch, show_default=True, help="Backbone whose blocks are measured."),
        click.option("--stage", "stages", default=None, help=f"Stages, comma list (default {stages}); {measured}."),
        click.option("--block", "block_name", default=None, help="Measure this block instead (e.g. layer1.0)."),
        click.option("--S", "S", default=None, help=f"Granularities, comma list (default {S})."),
        click.option("--rates", default=None, help=f"Activation rates in [0, 1], comma list (default {rates})."),
        click.option("--repeats", default=None, type=COUNT, help=f"Timed full calls per variant (default {repeats}, "
                     f"quick {QUICK['repeats']}); with --tracker, time_evaluator samples per kernel."),
        click.option("--quick", is_flag=True, help="Tiny run (width x0.125, 64x64 input, few points) in seconds."),
        click.option("--input-size", default=None, type=COUNT, help="Network input size (default 224, quick 64)."),
        click.option("--width-mult", default=None, type=POSITIVE, help="Channel multiplier (default 1, quick 0.125)."),
        click.option("--out", "out_dir", default=".", show_default=True, type=click.Path(file_okay=False),
                     help="Folder of the JSON and PNG files."),
        click.option("--device", default="local", show_default=True,
                     help="Profile of the predictions: a shipped profile name or 'local' (this machine)."),
        click.option("--profile", default=None, type=click.Path(dir_okay=False), help="Profile YAML (overrides "
                     "--device)."),
        click.option("--target", default=None, help="TVM target (default: cuda if a GPU is visible, else llvm)."),
        click.option("--threads", default=2, show_default=True, type=COUNT, help="torch and TVM threads."),
        click.option("--seed", default=0, show_default=True, type=int, help="Weights and inputs seed."),
        click.option("--tracker", default=None, help="HOST:PORT of a TVM RPC tracker: run, check and time on the "
                     "board registered there with --key (give its --target); block times are kernel sums."),
        click.option("--key", default=None, help="Key of the board's RPC server at the --tracker."),
    ]

    def deco(f):
        for o in reversed(opts):
            f = o(f)
        return f

    return deco


def _setup(name: str, kw: dict, default_repeats: int, default_stages, default_S, default_rates) -> dict:
    """Validate the shared options; returns what the benchmark needs (blocks, profile, target, board, ...)."""
    if bool(kw["tracker"]) != bool(kw["key"]):
        raise LasnetError("--tracker and --key go together: the tracker's HOST:PORT and the key the board "
                          "registered with")
    if kw["tracker"] and not kw["target"]:
        raise LasnetError("--tracker needs --target, the board's TVM target (e.g. nvidia/jetson-agx-xavier or "
                          "\"llvm -mtriple=aarch64-linux-gnu\")")
    from ..fsutil import check_dir_writable

    check_dir_writable(kw["out_dir"])
    os.environ.setdefault("TVM_NUM_THREADS", str(kw["threads"]))
    import torch

    torch.set_num_threads(kw["threads"])
    from ..archs import arch_spec

    quick = kw["quick"]
    base = QUICK if quick else FULL
    cfg = dict(base, name=name, quick=quick, arch=kw["arch"], seed=kw["seed"], threads=kw["threads"],
               load_at_start=os.getloadavg())
    cfg["repeats"] = kw["repeats"] if kw["repeats"] is not None else (QUICK["repeats"] if quick else default_repeats)
    if cfg["repeats"] < 1:
        raise LasnetError(f"--repeats must be >= 1, got {cfg['repeats']}")
    cfg["input_size"] = kw["input_size"] if kw["input_size"] is not None else base["input_size"]
    cfg["width_mult"] = kw["width_mult"] if kw["width_mult"] is not None else base["width_mult"]
    arch_spec(kw["arch"], 1, cfg["input_size"], width_mult=cfg["width_mult"])  # validates the arch
    cfg["rates"] = _floats(kw["rates"], "--rates") if kw["rates"] else default_rates
    if any(not 0.0 <= r <= 1.0 for r in cfg["rates"]):
        raise LasnetError(f"--rates {kw['rates']!r}: every rate must lie in [0, 1]")
    cfg["S_explicit"] = kw["S"] is not None
    cfg["S"] = _ints(kw["S"], "--S") if kw["S"] else default_S
    if kw["block_name"] and kw["stages"]:
        raise LasnetError("give --stage or --block, not both")
    stages = _ints(kw["stages"], "--stage") if kw["stages"] else default_stages
    from ..benchmarks.block import select_blocks

    cfg["blocks"] = select_blocks(kw["arch"], stages, kw["block_name"], cfg["input_size"], cfg["width_mult"])
    if name == "fusion" and len(cfg["blocks"]) != 1:
        raise LasnetError("bench fusion measures one block: give one --stage or --block")
    from ..benchmarks.granularity import candidates
    from ..benchmarks.rate import usable_S

    if cfg["S"] is None:  # granularity: every stage's candidates
        cfg["S_lists"], cfg["S"] = candidates(cfg["blocks"]), "stage candidates"
    else:
        cfg["S_lists"] = usable_S(cfg["blocks"], cfg["S"], cfg["S_explicit"] or name == "fusion")
    from ..predictor.profiles import resolve_profile
    from ..records import default_target
    from ..targets import resolve_target, target_kind

    cfg["target"] = resolve_target(kw["target"] or default_target())
    cfg["kind"] = target_kind(cfg["target"])
    if cfg["kind"] == "cuda" and not kw["tracker"]:
        import tvm

        if not tvm.cuda(0).exist:
            raise LasnetError(f"target {kw['target'] or 'cuda'} needs a CUDA GPU; none is visible")
    cfg["hw"] = resolve_profile(kw["device"], kw["profile"])
    tag = "cpu" if cfg["kind"] == "cpu" else "cuda"
    cfg["board"] = None
    if kw["tracker"]:
        from ..remote import connect

        cfg["board"] = connect(kw["tracker"], kw["key"], kw["target"])
        cfg["kernel_repeat"] = cfg["repeats"]  # no full calls on a board: --repeats samples each kernel
        tag += "_rpc-" + "".join(c if c.isalnum() or c in "-." else "_" for c in kw["key"])
    cfg["stem"] = os.path.join(kw["out_dir"], f"{name}_{kw['arch']}_{tag}{'_quick' if quick else ''}")
    return cfg


def _finish(cfg: dict, res: dict, plot, table) -> None:
    """Add the header and settings, write JSON and PNG, print the table."""
    from ..fsutil import atomic_path
    from ..records import run_header, write_json

    board = cfg["board"]
    note = ("measured on a shared machine (other jobs may run at the same time, see load_average); medians of "
            "interleaved rounds" if cfg["kind"] == "cpu" and board is None else None)
    out = run_header(cfg["name"], cfg["target"], cfg["threads"], cfg["repeats"], cfg["hw"], note, cfg["load_at_start"])
    out["timing"] = "full block calls from Python, medians of interleaved rounds"
    if board is not None:
        out.update(board.header())
    out.update({k: cfg[k] for k in ("arch", "quick", "input_size", "width_mult", "seed", "kernel_repeat",
                                    "min_repeat_ms", "rates", "S")})
    out.update(res)
    with atomic_path(cfg["stem"] + ".png", "plot") as png:
        plot(out, png)
        write_json(cfg["stem"] + ".json", out)
    click.echo(table(out))
    click.echo(f"wrote {cfg['stem']}.json and {cfg['stem']}.png")


def _log(msg: str) -> None:
    click.echo(msg, err=True)


@bench.command("fusion")
@_sweep_options("las_resnet101", "1", 100, "4", "0.6")
def fusion(**kw):
    """Operator-fusion ablation (paper Table 1): static and 4 fusion variants, measured and predicted."""
    cfg = _setup("fusion", kw, 100, (1,), (4,), (0.6,))
    from ..benchmarks import fusion as F
    from ..benchmarks.plots import plot_fusion

    res = F.run(cfg["blocks"][0], cfg["S_lists"][0], cfg["rates"], cfg["hw"], cfg["target"], cfg["repeats"],
                cfg["kernel_repeat"], cfg["min_repeat_ms"], cfg["seed"], log=_log, board=cfg["board"])
    _finish(cfg, res, plot_fusion, F.format_table)


_EXCLUDE = click.option("--exclude-mismatch", is_flag=True,
                        help="Leave out (do not time) dynamic variants that differ from PyTorch, listing them in "
                        "the results, instead of stopping with an error.")


@bench.command("rate")
@_sweep_options("las_resnet50", "1,2,3,4", 20, "1,2,4,8 up to the output size; quick 1,2",
                 "0,0.1,...,1; quick 0,0.5,1")
@_EXCLUDE
def rate(exclude_mismatch, **kw):
    """Latency ratio against activation rate per stage and S (paper Fig. 4/5), measured and predicted."""
    from ..benchmarks import rate as R

    quick = kw["quick"]
    cfg = _setup("rate", kw, 20, (1, 2) if quick else (1, 2, 3, 4), (1, 2) if quick else R.DEFAULT_S,
                 (0.0, 0.5, 1.0) if quick else R.DEFAULT_RATES)
    from ..benchmarks.plots import plot_rate

    res = R.run(cfg["blocks"], cfg["S_lists"], cfg["rates"], cfg["hw"], cfg["target"], cfg["repeats"],
                cfg["kernel_repeat"], cfg["min_repeat_ms"], cfg["seed"], log=_log, exclude_mismatch=exclude_mismatch,
                board=cfg["board"])
    _finish(cfg, res, plot_rate, R.format_table)


@bench.command("granularity")
@_sweep_options("las_resnet50", "1,2,3", 30, "the stage's candidates; quick 1,2,4", "0.5")
@click.option("--tolerance", default=0.05, show_default=True, type=NON_NEGATIVE,
              help="Choice: the smallest S within this fraction of the fastest.")
@_EXCLUDE
def granularity(tolerance, exclude_mismatch, **kw):
    """Latency ratio against S per stage at fixed rates (paper Fig. 6); best S measured vs predicted."""
    from ..benchmarks import granularity as G

    quick = kw["quick"]
    cfg = _setup("granularity", kw, 30, (1, 2) if quick else (1, 2, 3), (1, 2, 4) if quick else None, (0.5,))
    from ..benchmarks.plots import plot_granularity

    res = G.run(cfg["blocks"], cfg["S_lists"], cfg["rates"], cfg["hw"], cfg["target"], cfg["repeats"],
                cfg["kernel_repeat"], cfg["min_repeat_ms"], tolerance, cfg["seed"], log=_log,
                exclude_mismatch=exclude_mismatch, board=cfg["board"])
    res["S_per_block"] = {st["block"]["block"]: sorted({p["S"] for p in st["points"]}) for st in res["stages"]}
    _finish(cfg, res, plot_granularity, G.format_table)


@bench.command("masker")
@_sweep_options("las_resnet50", "1,2,3,4; quick 1,2", 20, "4,4,2,1: one per stage 1..4, or one for all",
                "0.1,0.25,0.5; quick 0.1,0.5", "the first block and the first identity block of each are measured")
@_EXCLUDE
def masker(exclude_mismatch, **kw):
    """Masker placement, fused vs separate, per block and rate: the predictor's choice against the measured best
    (the first block and the first identity block of each stage)."""
    from ..benchmarks import masker as M

    if kw["tracker"]:
        raise LasnetError("bench masker runs on this machine: --tracker is not supported")
    quick = kw["quick"]
    S = _ints(kw["S"], "--S") if kw["S"] else M.DEFAULT_S
    if len(S) not in (1, 4):
        raise LasnetError(f"--S {kw['S']!r}: expected one S for every stage or four, one per stage 1..4")
    cfg = _setup("masker", dict(kw, S=None), 20, (1, 2) if quick else (1, 2, 3, 4), (1,),
                 (0.1, 0.5) if quick else M.DEFAULT_RATES)
    cfg["S"] = S * 4 if len(S) == 1 else S
    if not kw["block_name"]:
        from ..archs import arch_spec

        stages = _ints(kw["stages"], "--stage") if kw["stages"] else ((1, 2) if quick else (1, 2, 3, 4))
        cfg["blocks"] = M.measured_blocks(arch_spec(kw["arch"], 1, cfg["input_size"],
                                                    width_mult=cfg["width_mult"]).blocks, stages)
    blocks = M.with_S(cfg["blocks"], dict(zip((1, 2, 3, 4), cfg["S"])))
    from ..benchmarks.plots import plot_masker

    res = M.run(blocks, cfg["rates"], cfg["hw"], cfg["target"], cfg["repeats"], cfg["seed"], log=_log,
                exclude_mismatch=exclude_mismatch)
    _finish(cfg, res, plot_masker, M.format_table)
