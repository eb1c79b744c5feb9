"""The explain step's two PNG charts: time by operator kind per variant (stacked bars), and
SQNR by layer depth (one line per INT8 variant). matplotlib's Agg canvas, no pyplot state."""
from __future__ import annotations

from pathlib import Path

from mobilenet.explain import kinds
from mobilenet.explain.records import OK
from mobilenet.report.plots import new_figure, save_png

# One colour per kind, convolutions in blues, the overheads in greys.
KIND_COLOURS = {kinds.CONV_1X1: "#4C72B0", kinds.CONV_DW: "#64B5CD", kinds.CONV_FULL: "#2A3F6B",
                kinds.ADD: "#DD8452", kinds.POOL: "#55A868", kinds.LINEAR: "#C44E52",
                kinds.QDQ: "#8172B3", kinds.LAYOUT: "#937860", kinds.OTHER: "#BBBBBB"}


def kinds_chart(profiles: list, path: Path) -> Path:
    """Horizontal stacked bars of ms per call by kind; unprofiled p50 as a tick; variants
    without a profile are named with why, not drawn."""
    rows = profiles[::-1]  # barh draws bottom-up; keep the table's order top-down
    fig = new_figure(9.5, 1.6 + 0.45 * len(rows))
    ax = fig.add_subplot()
    top = max([p.kind_sum_ms for p in rows if p.status == OK] + [p.unprofiled_p50_ms or 0 for p in rows] + [1])
    for y, profile in enumerate(rows):
        if profile.status != OK:
            ax.text(top * 0.01, y, f"not available: {profile.reason[:70]}…", va="center", color="0.4",
                    style="italic", fontsize=8)
            continue
        left = 0.0
        for kind in kinds.KINDS:
            ms = profile.kind_ms.get(kind, 0.0)
            if ms:
                ax.barh(y, ms, left=left, color=KIND_COLOURS[kind], height=0.65, edgecolor="white", linewidth=0.5)
                left += ms
        if profile.unprofiled_p50_ms:
            ax.plot([profile.unprofiled_p50_ms] * 2, [y - 0.4, y + 0.4], color="black", linewidth=1.5)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    handles = [Patch(facecolor=KIND_COLOURS[k], label=k) for k in kinds.KINDS]
    handles.append(Line2D([], [], color="black", linewidth=1.5, label="unprofiled p50"))
    ax.legend(handles=handles, loc="lower right", fontsize=8, ncols=2)
    ax.set_yticks(range(len(rows)), [p.variant for p in rows])
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlim(0, top * 1.05)
    ax.set_xlabel("ms per call by operator kind, 1 thread (each runtime's own profiler)")
    ax.set_title("Where the time goes")
    return save_png(fig, path)


def sqnr_chart(errors: list, cap_db: float, path: Path) -> Path:
    """SQNR (dB) of each layer against FP32, by relative depth, one line per INT8 variant."""
    fig = new_figure(9.5, 5)
    ax = fig.add_subplot()
    for error in errors:
        if error.status != OK or not error.layers:
            continue
        depth = [layer["depth"] for layer in error.layers]
        values = [layer["sqnr_db"] for layer in error.layers]
        style = "o" if len(values) == 1 else "-"
        ax.plot(depth, values, style, label=error.variant, linewidth=1.2, markersize=5)
    if any(layer["capped"] for error in errors if error.status == OK for layer in error.layers):
        ax.axhline(cap_db, color="0.6", linestyle=":", linewidth=0.8)
        ax.text(0.0, cap_db, f" cap {cap_db:g} dB (identical to FP32)", va="bottom", fontsize=7, color="0.4")
    ax.set_xlabel("layer depth (share of the compared layers; 1 = the last)")
    ax.set_ylabel("SQNR vs FP32, dB (higher is better)")
    ax.set_title("Quantization error by layer")
    ax.legend(fontsize=8)
    return save_png(fig, path)
