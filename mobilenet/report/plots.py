"""PNG charts for the report: latency per variant, size vs latency, thread scaling.

matplotlib is imported inside the functions so the rest of the package (and `invoke
--help`) never pays for it, and figures are built without pyplot so no global figure
state or interactive backend is involved.
"""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from mobilenet.files import atomic_path
from mobilenet.registry import REFERENCE_ID, display_order
from mobilenet.results import Result, group_by

COLOURS = {"fp32": "#4C72B0", "int8": "#DD8452"}
DPI = 110


def slug(machine_id: str) -> str:
    """A machine id as a file-name part that needs no escaping in a Markdown link."""
    return re.sub(r"[^a-z0-9]+", "-", machine_id.lower()).strip("-") or "machine"


def _ordered(results: list[Result]) -> list[Result]:
    return sorted(results, key=lambda r: display_order(r.variant))


def new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def threads_label(threads: int) -> str:
    return f"{threads} thread{'s' if threads > 1 else ''}"


def _text_box(label, renderer):
    from matplotlib.text import Text
    # The text alone: an annotation's own extent includes its leader line, which grows as
    # the label moves away and would then overlap everything.
    label.update_positions(renderer)
    return Text.get_window_extent(label, renderer)


def _declutter(fig, labels) -> None:
    """Push overlapping point labels upwards until none overlap.

    matplotlib places each annotation on its own; variants of similar size and speed
    would otherwise print their names on top of each other.
    """
    for label in labels:
        label.set_in_layout(False)  # so the layout measured here is the one saved
    fig.draw_without_rendering()  # label boxes are measured in pixels of the final layout
    renderer = fig.canvas.get_renderer()
    placed = []
    for label in sorted(labels, key=lambda a: a.xy[1]):
        for _ in range(len(labels)):
            box = _text_box(label, renderer)
            clash = next((other for other in placed if box.overlaps(other)), None)
            if clash is None:
                break
            dx, dy = label.xyann
            label.xyann = (dx, dy + (clash.y1 - box.y0) * 72 / fig.dpi + 1)
        placed.append(_text_box(label, renderer))


def latency_chart(results: list[Result], path: Path) -> Path:
    """Horizontal bars of p50 with a whisker up to p90; unmeasured variants are named, not drawn."""
    from matplotlib.patches import Patch
    rows = _ordered(results)[::-1]  # barh draws bottom-up; keep the table's order top-down
    fig = new_figure(9, 1.4 + 0.42 * len(rows))
    ax = fig.add_subplot()
    measured = [r for r in rows if r.measured]
    top = max(r.p90_ms for r in measured)
    for y, r in enumerate(rows):
        if not r.measured:
            why = "latency withheld" if r.status == "FAILED" else "not measured"
            ax.text(top * 0.01, y, f"{r.status}: {why}", va="center", color="0.4", style="italic")
            continue
        ax.barh(y, r.p50_ms, color=COLOURS.get(r.precision, "0.6"), height=0.65,
                hatch="//" if r.status == "DEGRADED" else None, edgecolor="white")
        # p50 is the sessions' geometric mean and p90 pools every call, so p90 can sit a hair below it.
        ax.errorbar(r.p50_ms, y, xerr=[[0], [max(0.0, r.p90_ms - r.p50_ms)]], fmt="none", ecolor="0.2", capsize=3)
        ax.text(r.p90_ms + top * 0.01, y, f"p50 {r.p50_ms:.1f} · p90 {r.p90_ms:.1f} ms", va="center", fontsize=8)
    reference = next((r for r in measured if r.variant == REFERENCE_ID), None)
    if reference:
        ax.axvline(reference.p50_ms, color="0.3", linestyle="--", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [r.variant for r in rows])
    ax.set_ylim(-0.6, len(rows) - 0.4)  # rows without a bar keep their full height
    ax.set_xlim(0, top * 1.3)  # room for the figures printed after each whisker
    ax.set_xlabel("ms per image, p50 bar, whisker to p90 (lower is better)")
    ax.set_title(f"Latency at {threads_label(rows[0].threads)} — {rows[0].env.machine_id}")
    extra = []
    if any(r.status == "DEGRADED" for r in measured):
        extra.append(Patch(facecolor="0.6", hatch="//", edgecolor="white", label="DEGRADED"))
    if reference:
        extra.append(Patch(facecolor="none", edgecolor="0.3", linestyle="--", label="eager FP32 p50"))
    _precision_legend(ax, extra)
    ax.grid(axis="x", alpha=0.3)
    return save_png(fig, path)


def _precision_legend(ax, extra=()) -> None:
    from matplotlib.patches import Patch
    handles = [Patch(color=c, label=p.upper()) for p, c in COLOURS.items()]
    ax.legend(handles=handles + list(extra), loc="best", fontsize=8)


def _accuracy_label(r: Result) -> str:
    # With random weights top-1 is meaningless, so the label leaves it out.
    if r.top1_pct is None or r.env.weights_random:
        return r.variant
    return f"{r.variant}  {r.top1_pct:.1f} %"


def tradeoff_chart(results: list[Result], path: Path) -> Path:
    """Size (MB) against p50 (ms), each point named with its variant and top-1."""
    points = [r for r in _ordered(results) if r.measured]
    fig = new_figure(9, 6)
    ax = fig.add_subplot()
    x_max = max(r.size_mb for r in points) * 1.1
    y_max = max(r.p50_ms for r in points) * 1.25
    labels = []
    for r in points:
        ax.scatter(r.size_mb, r.p50_ms, s=45, color=COLOURS.get(r.precision, "0.6"), zorder=3,
                   marker="D" if r.status == "DEGRADED" else "o")
        # Labels go towards the middle of the plot so the ones at the edges stay inside.
        left = r.size_mb > x_max / 2
        labels.append(ax.annotate(
            _accuracy_label(r) + (f" ({r.status})" if r.status in ("DEGRADED", "INCONCLUSIVE") else ""),
            (r.size_mb, r.p50_ms), xytext=(-8 if left else 8, 4), textcoords="offset points",
            ha="right" if left else "left", fontsize=8,
            arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6}))
    ax.set_xlim(0, x_max)
    ax.set_ylim(0, y_max)
    _precision_legend(ax)
    ax.set_xlabel("file size, MB")
    ax.set_ylabel("p50 latency, ms per image")
    scored = "" if points[0].env.weights_random else ", labels give top-1"
    ax.set_title(f"Size vs latency at {threads_label(points[0].threads)}{scored} "
                 f"(better: down and left)\n{points[0].env.machine_id}")
    ax.grid(alpha=0.3)
    _declutter(fig, labels)
    return save_png(fig, path)


def scaling_lines(results: list[Result]) -> dict[str, list[tuple[int, float, str]]]:
    """(threads, p50 ms, precision) per variant measured at more than one thread count."""
    lines = defaultdict(list)
    for r in _ordered(results):
        if r.measured:
            lines[r.variant].append((r.threads, r.p50_ms, r.precision))
    return {variant: sorted(points) for variant, points in lines.items() if len(points) > 1}


def scaling_chart(results: list[Result], path: Path) -> Path:
    """p50 against thread count, one line per variant measured at several counts."""
    lines = scaling_lines(results)
    counts = sorted({r.threads for r in results})
    fig = new_figure(9, 6)
    ax = fig.add_subplot()
    labels = []
    for variant, points in lines.items():
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.plot(xs, ys, marker="o", color=COLOURS.get(points[0][2], "0.6"), alpha=0.8)
        labels.append(ax.annotate(variant, (xs[-1], ys[-1]), xytext=(8, 0), textcoords="offset points",
                                  va="center", fontsize=8,
                                  arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6}))
    ax.set_xscale("log", base=2)
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.minorticks_off()
    # Room on the right for the variant names at the last thread count.
    ax.set_xlim(counts[0] / 1.15, counts[-1] * 1.9)
    ax.set_ylim(0, max(p[1] for points in lines.values() for p in points) * 1.15)
    ax.set_xlabel("threads")
    ax.set_ylabel("p50 latency, ms per image")
    _precision_legend(ax)
    ax.set_title(f"Thread scaling — {results[0].env.machine_id}")
    ax.grid(alpha=0.3)
    _declutter(fig, labels)
    return save_png(fig, path)


def write_all(results: list[Result], plots_dir: Path) -> dict[tuple, Path]:
    """Every chart the report embeds, keyed (machine_id, kind, threads); threads is None
    for the scaling chart. Charts with nothing measured to draw are not made, and timings
    from an emulated machine are never charted: they are not measurements."""
    figures = {}
    real = [r for r in results if not r.env.emulated]
    for machine, group in group_by(real, lambda r: r.env.machine_id).items():
        folder = Path(plots_dir) / slug(machine)
        for threads, rows in sorted(group_by(group, lambda r: r.threads).items()):
            if not any(r.measured for r in rows):
                continue
            figures[machine, "latency", threads] = latency_chart(rows, folder / f"latency-{threads}t.png")
            figures[machine, "tradeoff", threads] = tradeoff_chart(rows, folder / f"tradeoff-{threads}t.png")
        if scaling_lines(group):
            figures[machine, "scaling", None] = scaling_chart(group, folder / "scaling.png")
    return figures
