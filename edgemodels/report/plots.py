"""report.png (accuracy against size, speed against the device's target) and pareto.png (accuracy and speed
against bytes). matplotlib is imported here only: a device without it still writes report.json and the tables."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from edgemodels.report.pareto import large_fp32_bytes, pareto_rows
from edgemodels.report.rows import Row, check_speed_label
from edgemodels.report.tables import fmt_sig
from edgemodels.store.files import atomic_write_bytes
from edgemodels.study.criteria import SPEED_TARGET_PER_S, STRICT_RATIO

def write_png(rows: list[Row], path: Path, device: str, target_per_s: float = SPEED_TARGET_PER_S) -> None:
    """Accuracy-vs-size and throughput panels; a panel without data says "no data" instead."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: not needed on a device
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for r in rows:
        check_speed_label(r)
    fig = Figure(figsize=(13, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax_acc, ax_spd = fig.subplots(1, 2)
    fig.suptitle(f"edgemodels bench: {device}")
    markers = "osD^v<>ph*"

    # Panel 1: accuracy vs size, one series per mode, points labelled by model.
    pts = [r for r in rows if r.size_bytes and r.accuracy is not None]
    ax_acc.set_title("accuracy vs size")
    if pts:
        modes = sorted({r.mode for r in pts})
        for i, mode in enumerate(modes):
            sel = [r for r in pts if r.mode == mode]
            ax_acc.scatter([r.size_bytes / 1e6 for r in sel], [r.accuracy * 100 for r in sel],
                           marker=markers[i % len(markers)], s=50, label=mode)
            for r in sel:
                label = r.model if r.seq == "128" else f"{r.model} seq={r.seq}"
                ax_acc.annotate(label, (r.size_bytes / 1e6, r.accuracy * 100),
                                textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax_acc.set_xscale("log")
        ax_acc.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax_acc.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax_acc.xaxis.set_minor_formatter(NullFormatter())
        ax_acc.margins(x=0.12, y=0.12)  # room for the point labels
        ax_acc.set_xlabel("size (MB, log scale)")
        ax_acc.set_ylabel("accuracy (%)")
        ax_acc.grid(True, which="both", alpha=0.3)
        ax_acc.legend(title="mode", fontsize=8)
    else:
        _no_data(ax_acc)

    # Panel 2: throughput bars, hatched when projected.
    spd = [r for r in rows if r.inferences_per_s is not None]
    ax_spd.set_title(f"throughput on {device}")
    if spd:
        many_seq = len({r.seq for r in spd}) > 1
        labels = [f"{r.model}/{r.mode}" + (f"@{r.seq}" if many_seq else "") for r in spd]
        values = [r.inferences_per_s for r in spd]
        x = list(range(len(spd)))
        bars = ax_spd.bar(x, values, color=["tab:orange" if r.method == "projected" else "tab:blue"
                                            for r in spd])
        for bar, r in zip(bars, spd):
            if r.method == "projected":
                bar.set_hatch("//")
            ax_spd.annotate(f"{fmt_sig(r.inferences_per_s)}\n{r.method}",
                            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7)
        target = ax_spd.axhline(target_per_s, color="red", linestyle="--", linewidth=1)
        positive = [v for v in values if v > 0]
        if positive and max(positive) / min(positive + [target_per_s]) > 50:
            ax_spd.set_yscale("log")
        ax_spd.margins(y=0.15)  # room for the value labels above the tallest bar
        ax_spd.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
        ax_spd.set_ylabel("inferences / s")
        ax_spd.legend(handles=[
            Patch(facecolor="tab:blue", label="measured"),
            Patch(facecolor="tab:orange", hatch="//", label="projected"),
            target,
        ], labels=["measured", "projected", f"target {target_per_s:g}/s"], fontsize=8)
    else:
        _no_data(ax_spd)

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(Path(path), buf.getvalue())


def _no_data(ax: Any) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, fontsize=14,
            color="grey")
    ax.set_xticks([])
    ax.set_yticks([])



def write_pareto_png(rows: list[Row], path: Path, device: str) -> None:
    """Accuracy vs bytes and inferences/s vs bytes (log x), the fronts joined, the 160x budget drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    prs = pareto_rows(rows)
    large = large_fp32_bytes(rows)
    fig = Figure(figsize=(13, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    fig.suptitle(f"edgemodels Pareto: {device}")
    for ax, field_, front, label in ((axes[0], "accuracy", "accuracy_front", "accuracy (%)"),
                                     (axes[1], "inferences_per_s", "speed_front", "inferences/s")):
        pts = [p for p in prs if getattr(p, field_) is not None]
        ax.set_title(f"{label} vs bytes")
        if not pts:
            _no_data(ax)
            continue
        scale = 100 if field_ == "accuracy" else 1
        ax.scatter([p.size_bytes for p in pts], [getattr(p, field_) * scale for p in pts], color="grey", s=30)
        fr = sorted((p for p in pts if getattr(p, front)), key=lambda p: p.size_bytes)
        ax.plot([p.size_bytes for p in fr], [getattr(p, field_) * scale for p in fr], "-o", color="tab:red",
                label="front")
        for p in pts:
            ax.annotate(f"{p.model}/{p.mode}" + ("" if p.seq == "128" else f"@{p.seq}"),
                        (p.size_bytes, getattr(p, field_) * scale), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
        if large:
            ax.axvline(large / STRICT_RATIO, color="tab:green", linestyle="--",
                       label=f"{STRICT_RATIO:g}x smaller than BERT-Large fp32")
        ax.set_xscale("log")
        ax.set_xlabel("bytes (log scale)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(Path(path), buf.getvalue())
