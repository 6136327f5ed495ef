"""PNG figures of ``bench fusion``, ``bench rate``, ``bench granularity``, ``bench masker`` and ``bench model``
(matplotlib, Agg backend).

Measured values are solid lines / filled bars, predicted ones dashed lines / hatched bars. The rate and
granularity figures end with a predicted-vs-measured scatter of every block-level latency (log-log, with the
``y = x`` line and a +-10% band).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter  # noqa: E402

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 3)
    return math.ceil(n / cols), cols


def _subplots(n: int, size=(4.6, 3.6)):
    rows, cols = _grid(n)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _title(res: dict) -> str:
    return f"{res['arch']}{' (quick)' if res.get('quick') else ''} on {res['device']}; model: {res['profile']['name']}"


def _scatter(ax, stages: list[dict]) -> None:
    """Predicted vs measured block latencies (dynamic points and static blocks), log-log."""
    for i, st in enumerate(stages):
        c = COLORS[i % len(COLORS)]
        ax.scatter([p["measured_ms"] for p in st["points"]], [p["predicted_ms"] for p in st["points"]], s=14,
                   color=c, alpha=0.8, label=f"stage {st['block']['stage']}")
        ax.scatter([st["static"]["measured_ms"]], [st["static"]["predicted_ms"]], s=60, marker="s", color=c,
                   edgecolor="black")
    vals = [v for st in stages for p in st["points"] + [st["static"]] for v in (p["measured_ms"], p["predicted_ms"])]
    lo, hi = min(vals) / 1.3, max(vals) * 1.3
    ax.plot([lo, hi], [lo, hi], color="black", lw=1)
    ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="gray", alpha=0.2, label="+-10%")
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel="measured (ms)", ylabel="predicted (ms)",
           title="block latency: predicted vs measured\n(squares: static)")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FormatStrFormatter("%g"))
        axis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=7)


def _rho(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _accuracy_note(fig, res: dict) -> None:
    """Block MAPE and Spearman per stage (dynamic, active patches) and the best-S agreement, bottom left."""
    acc, a = res.get("accuracy") or {}, res.get("agreement") or {}
    lines = [f"{k}: MAPE {100 * v['mape']:.1f}%, Spearman {_rho(v['spearman'])}"
             for k, v in (acc.get("per_stage") or {}).items()]
    if a.get("n"):
        lines.append(f"predicted fastest S within {100 * a['within']:.0f}% of the measured fastest: "
                     f"{100 * a['best_within']:.0f}% of {a['n']} (exact {100 * a['best']:.0f}%)")
    if lines:
        fig.text(0.01, 0.01, "\n".join(lines), fontsize=7, ha="left", va="bottom")


def _excluded_note(fig, res: dict) -> None:
    """Name the variants left out (``--exclude-mismatch``) at the figure's bottom right."""
    by = {}
    for e in res.get("excluded") or []:
        by.setdefault((e["block"], e["S"]), []).append(f"{e['rate']:g}")
    if by:
        text = "; ".join(f"{b} S={S} at r={','.join(r)}" for (b, S), r in by.items())
        fig.text(0.99, 0.005, f"left out (output differs from PyTorch): {text}", ha="right", va="bottom", fontsize=7)


def plot_rate(res: dict, path) -> Path:
    """One subplot per block: ``r_l`` against ``r`` for every S, measured and predicted; then the scatter."""
    stages = res["stages"]
    fig, axes = _subplots(len(stages) + 1)
    for ax, st in zip(axes, stages):
        b = st["block"]
        for i, S in enumerate(sorted({p["S"] for p in st["points"]})):
            pts = sorted((p for p in st["points"] if p["S"] == S), key=lambda p: p["rate"])
            r = [p["rate"] for p in pts]
            c = COLORS[i % len(COLORS)]
            ax.plot(r, [p["measured_ratio"] for p in pts], "-o", color=c, ms=3, label=f"S={S}")
            ax.plot(r, [p["predicted_ratio"] for p in pts], "--", color=c)
        ax.axhline(1.0, color="gray", lw=0.8, ls=":")
        ax.set(xlabel="activation rate r", ylabel=r"latency ratio $r_\ell$", xlim=(0, 1),
               title=f"stage {b['stage']} ({b['block']}, {b['C_in']}->{b['C_mid']}->{b['C_out']}, {b['H']}x{b['H']})")
        handles, labels = ax.get_legend_handles_labels()
        handles += [Line2D([], [], color="black", ls="-", marker="o", ms=3), Line2D([], [], color="black", ls="--")]
        ax.legend(handles, labels + ["measured", "predicted"], fontsize=7)
    _scatter(axes[-1], stages)
    _excluded_note(fig, res)
    _accuracy_note(fig, res)
    fig.suptitle(f"latency ratio vs activation rate: {_title(res)}", fontsize=10)
    return _save(fig, path)


def plot_granularity(res: dict, path) -> Path:
    """One subplot per block: ``r_l`` against S per rate, measured and predicted, best S starred; the scatter.

    S is on an evenly spaced categorical axis (candidates such as 7 and 8 stay apart).
    """
    stages = res["stages"]
    fig, axes = _subplots(len(stages) + 1)
    for ax, st in zip(axes, stages):
        b = st["block"]
        rows = [x for x in res["best"] if x["block"] == b["block"]]
        S_all = sorted({S for row in rows for S in row["S"]})
        pos = {S: i for i, S in enumerate(S_all)}
        for i, row in enumerate(rows):
            c = COLORS[i % len(COLORS)]
            xs = [pos[S] for S in row["S"]]
            ax.plot(xs, row["measured_ratio"], "-o", color=c, ms=3, label=f"r={row['rate']}")
            ax.plot(xs, row["predicted_ratio"], "--", color=c)
            mb, pb = row["measured_best_S"], row["predicted_best_S"]
            ax.plot([pos[mb]], [row["measured_ratio"][row["S"].index(mb)]], "*", color=c, ms=13, mec="black")
            ax.plot([pos[pb]], [row["predicted_ratio"][row["S"].index(pb)]], "*", color="white", ms=13, mec=c)
        ax.set_xticks(range(len(S_all)), [str(S) for S in S_all])
        ax.axhline(1.0, color="gray", lw=0.8, ls=":")
        ax.set(xlabel="granularity S", ylabel=r"latency ratio $r_\ell$",
               title=f"stage {b['stage']} ({b['block']}, {b['C_in']}->{b['C_mid']}->{b['C_out']}, {b['H']}x{b['H']})")
        ax.legend(fontsize=7)
    _scatter(axes[-1], stages)
    key = [Line2D([], [], color="black", ls="-", marker="o", ms=3), Line2D([], [], color="black", ls="--"),
           Line2D([], [], ls="", marker="*", color="gray", mec="black", ms=10),
           Line2D([], [], ls="", marker="*", color="white", mec="gray", ms=10)]
    fig.legend(key, ["measured", "predicted", "fastest S (measured)", "fastest S (predicted)"], loc="lower right",
               fontsize=9, frameon=False, bbox_to_anchor=(0.98, 0.05))
    _excluded_note(fig, res)
    _accuracy_note(fig, res)
    fig.suptitle(f"latency ratio vs granularity: {_title(res)}", fontsize=10)
    return _save(fig, path)


def plot_fusion(res: dict, path) -> Path:
    """Grouped bars per variant (static, none .. all): measured full call, measured kernel sum, predicted."""
    cases = res["cases"]
    fig, axes = _subplots(len(cases), size=(6.4, 4.0))
    series = (("measured_ms", "measured (full call)", {}), ("measured_kernel_sum_ms", "measured (kernel sum)",
                                                            {"alpha": 0.55}),
              ("predicted_ms", "predicted", {"hatch": "//", "fill": False}))
    for ax, c in zip(axes, cases):
        names = [v["variant"] for v in c["variants"]]
        w = 0.27
        for j, (key, label, style) in enumerate(series):
            vals = [v[key] for v in c["variants"]]
            bars = ax.bar([i + (j - 1) * w for i in range(len(names))], vals, w, label=label,
                          color=COLORS[0] if j < 2 else None, edgecolor=COLORS[1] if j == 2 else None, **style)
            if j != 1:
                ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)
        ax.set_xticks(range(len(names)), names)
        top = max(v[k] for v in c["variants"] for k, _, _ in series)
        ax.set_ylim(0, top * 1.3)
        ax.set(ylabel="latency (ms)", title=f"S={c['S']}, r={c['rate']} ({c['active_patches']}/{c['num_patches']} "
                                            f"patches)")
        ax.legend(fontsize=7, ncol=3, loc="upper center")
    b = res["block"]
    fig.suptitle(f"operator fusion (Table 1): {b['block']} {b['C_in']}->{b['C_mid']}->{b['C_out']} {b['H']}x{b['H']}\n"
                 f"{_title(res)}", fontsize=9)
    return _save(fig, path)


def _rates_text(res: dict) -> str:
    if "per_rate" in res:
        return "/".join(f"{r['rate']:.2f}" for r in res["per_rate"])
    return f"{res['rate']:.2f}"


def plot_model(res: dict, path) -> Path:
    """Horizontal bars of ``bench model``'s median milliseconds per image, one per variant (the compiled models,
    PyTorch's, and the static model in other runtimes), with each one's latency relative to the compiled LAS."""
    ms = res["ms"]
    names = list(ms)
    ref = "las" if "las" in ms else "static"  # several rates: relative to the compiled static model
    fig, ax = plt.subplots(figsize=(7.2, 0.45 * len(names) + 1.6))
    colors = [COLORS[0] if k.startswith("las") or k == "static" else COLORS[2] if k in res.get("baselines", {})
              else COLORS[1] for k in names]
    bars = ax.barh(range(len(names)), [ms[k] for k in names], color=colors)
    ax.bar_label(bars, [f"{ms[k]:.2f} ms ({ms[k] / ms[ref]:.2f}x {ref.upper() if ref == 'las' else ref})"
                        for k in names], fontsize=7, padding=2)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, max(ms.values()) * 1.45)
    ax.set(xlabel="latency per image (ms, median of interleaved rounds)")
    ax.set_title(f"{res['arch']} {res['granularity']} @{res['input_size']}, width x{res['width_mult']}, rate "
                 f"{_rates_text(res)}, {res['threads']} threads\n{res['machine']['cpu']}", fontsize=9)
    return _save(fig, path)


def plot_masker(res: dict, path) -> Path:
    """One subplot per block: ms of both masker placements against the rate, measured (solid) and predicted
    (dashed); a star on the measured best, a ring on the predicted choice (at its measured ms)."""
    blocks = [b for b in res["blocks"] if b["rows"]] or res["blocks"][:1]
    fig, axes = _subplots(len(blocks))
    for ax, blk in zip(axes, blocks):
        b, rows = blk["block"], sorted(blk["rows"], key=lambda r: r["rate"])
        rates = [r["rate"] for r in rows]
        for i, m in enumerate(("fused", "separate")):
            c = COLORS[i]
            ax.plot(rates, [r["measured_ms"][m] for r in rows], "-o", color=c, ms=3, label=m)
            ax.plot(rates, [r["predicted_ms"][m] for r in rows], "--", color=c)
        for r in rows:
            ax.plot([r["rate"]], [r["measured_ms"][r["measured_best"]]], "*", color="gold", ms=12, mec="black")
            ax.plot([r["rate"]], [r["measured_ms"][r["predicted_choice"]]], "o", mfc="none", mec="black", ms=11)
        ax.set(xlabel="activation rate r", ylabel="block latency (ms)", ylim=(0, None),
               title=f"stage {b['stage']} {b['block']}, stride {b['stride']}, S={blk['S']}\n"
                     f"{b['C_in']}->{b['C_mid']}->{b['C_out']}, {b['H']}x{b['H']}")
        handles, labels = ax.get_legend_handles_labels()
        handles += [Line2D([], [], color="black", ls="-", marker="o", ms=3), Line2D([], [], color="black", ls="--"),
                    Line2D([], [], ls="", marker="*", color="gold", mec="black", ms=10),
                    Line2D([], [], ls="", marker="o", mfc="none", mec="black", ms=9)]
        ax.legend(handles, labels + ["measured", "predicted", "measured best", "predicted choice"], fontsize=6)
    a = res["agreement"]
    if a["cases"]:
        fig.text(0.01, 0.005, f"predicted placement within {100 * res['within']:.0f}% of the measured best: "
                 f"{a['within_5pct']}/{a['cases']} ({100 * a['share']:.0f}%), exact {a['exact']}/{a['cases']}",
                 fontsize=8, ha="left", va="bottom")
    _excluded_note(fig, res)
    fig.suptitle(f"masker placement, fused vs separate: {_title(res)}", fontsize=10)
    return _save(fig, path)
