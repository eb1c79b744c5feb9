"""The report's section on INT8 settings: which settings this report's INT8 rows were built with,
and, once `invoke tune` has run, its grid (build/tune/grid.json) as a table and a chart of
agreement against p50. Rendered from those files and the result files alone."""
from __future__ import annotations

from pathlib import Path

from tabulate import tabulate

from mobilenet.files import read_json
from mobilenet.registry import display_order
from mobilenet.report import plots
from mobilenet.results import Result
from mobilenet.tune import records, winners
from mobilenet.tune.grid import GRID_BY_VARIANT

CHART = Path("plots") / "tune.png"


def _md(text) -> str:
    from mobilenet.report.markdown import md
    return md(text)


def _pct(value, interval) -> str:
    if value is None:
        return "—"
    return f"{value:.1f} ({interval[0]:.1f}–{interval[1]:.1f})" if interval else f"{value:.1f}"


def _ms(value, interval) -> str:
    if value is None:
        return "—"
    return f"{value:.2f} ({interval[0]:.2f}–{interval[1]:.2f})" if interval else f"{value:.2f}"


def used_lines(results: list[Result]) -> list[str]:
    """Per INT8 variant of the report: the tune's winner it was built with, or the ISA-derived defaults."""
    seen: dict[str, str] = {}
    for r in sorted(results, key=lambda r: display_order(r.variant)):
        if r.precision != "int8" or r.variant in seen:
            continue
        record = (r.build.get("options") or {}).get(winners.RECORD_KEY) if isinstance(r.build, dict) else None
        if not isinstance(record, dict):
            seen[r.variant] = ("no tune grid: its builder has no setting `invoke tune` chooses"
                               if r.variant not in GRID_BY_VARIANT else
                               "not recorded (built before tune records existed)")
        elif record.get("source") == winners.WINNER:
            changes = ", ".join(f"{k}={v}" for k, v in (record.get("override") or {}).items()) or "no change"
            seen[r.variant] = (f"the `invoke tune` winner `{_md(record.get('setting'))}` ({_md(changes)}), "
                               f"tuned {_md(record.get('tuned_at'))} on {record.get('tuning_photos')} tuning photos")
        else:
            seen[r.variant] = "the ISA-derived defaults (no `invoke tune` winner for this target)"
    return [f"- `{_md(v)}`: {text}" for v, text in seen.items()]


def tuned_note(rows: list[Result]) -> str:
    """For the report's note on one INT8 variant: ' Built with the `invoke tune` winner ...', when its
    rows were; the note's history then describes the defaults, not the artifact."""
    for r in rows:
        record = (r.build.get("options") or {}).get(winners.RECORD_KEY) if isinstance(r.build, dict) else None
        if isinstance(record, dict) and record.get("source") == winners.WINNER and record.get("override"):
            changes = ", ".join(f"{k}={v}" for k, v in record["override"].items())
            return (f" **This build: the `invoke tune` winner `{_md(record.get('setting'))}` ({_md(changes)}), "
                    "which replaces the settings above where they differ.**")
    return ""


def _overlap_line(build_dir: Path, run: records.TuneRun) -> str:
    """Checked, not assumed: do the evaluation photos the builds scored hold a tuning photo?"""
    info = Path(build_dir) / "data" / "images.json"
    if not info.is_file():
        return ("The build folder's evaluation photos are not recorded, so their overlap with the tuning split is "
                "unchecked.")
    scored = set(read_json(info).get("eval_names") or [])
    shared = scored & set(run.tuning_names)
    if shared:
        return (f"**{len(shared)} of the {len(scored)} evaluation photos this report scored are tuning photos** "
                f"(e.g. {_md(sorted(shared)[0])}): its accuracy figures are not independent of the tune. Rerun "
                "`invoke report`, which rebuilds on the photos left after the tuning split.")
    return (f"Checked: none of the {len(scored)} evaluation photos the builds scored (build/data/images.json) is a "
            "tuning photo.")


def grid_table(grid: records.VariantGrid) -> str:
    rows = []
    for s in grid.settings:
        name = f"**{_md(s.name)}**" if s.winner else _md(s.name)
        rows.append([name + (" (shipped)" if s.shipped else ""), _md(s.changes),
                     _pct(s.agreement_pct, s.agreement_ci_pct) if s.status == "ok" else s.status,
                     f"{s.agreeing}/{s.tuning_photos}" if s.agreeing is not None else "—",
                     "—" if s.mcnemar_p_vs_best is None else f"{s.mcnemar_p_vs_best:.3g}",
                     _ms(s.p50_ms, s.p50_ci_ms),
                     "—" if s.build_s is None else f"{s.build_s:.0f}"
                     + ("" if s.build_cpu_s is None else f" ({s.build_cpu_s:.0f})"),
                     _md(s.verdict or s.reason)])
    return tabulate(rows, headers=["setting", "changes", "agree % (95 % Wilson)", "agreeing",
                                   "McNemar p vs most accurate", "p50 ms (95 % within-run)", "build s (CPU s)",
                                   "verdict"],
                    tablefmt="github", disable_numparse=True)


def side_line(grid: records.VariantGrid) -> str:
    side = grid.side_by_side
    if side is None:
        return ""
    if grid.winner == "shipped":
        return (f"On the {side.eval_photos} evaluation photos the shipped setting, kept, agrees with FP32 on "
                f"{_pct(side.shipped_agreement_pct, side.shipped_agreement_ci_pct)} % of them.")
    top1 = ""
    if side.shipped_top1_pct is not None:
        top1 = (f"; top-1 {_pct(side.shipped_top1_pct, side.shipped_top1_ci_pct)} % against "
                f"{_pct(side.winner_top1_pct, side.winner_top1_ci_pct)} %")
    return (f"Winner against shipped on the {side.eval_photos} evaluation photos (never tuned on): agreement with "
            f"FP32 {_pct(side.shipped_agreement_pct, side.shipped_agreement_ci_pct)} % shipped, "
            f"{_pct(side.winner_agreement_pct, side.winner_agreement_ci_pct)} % winner{top1}; "
            f"photos only the shipped setting agrees on {side.only_shipped_right}, only the winner "
            f"{side.only_winner_right} (exact McNemar p={side.mcnemar_p:.3g}).")


def chart(run: records.TuneRun, path: Path) -> Path | None:
    """Agreement on the tuning split against p50, one panel per variant, each with its 95 % intervals."""
    panels = [g for g in run.grids if any(s.p50_ms is not None and s.agreement_pct is not None for s in g.settings)]
    if not panels:
        return None
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig = plots.new_figure(4.2 * columns, 3.6 * rows)
    for index, grid in enumerate(panels):
        ax = fig.add_subplot(rows, columns, index + 1)
        for s in grid.settings:
            if s.p50_ms is None or s.agreement_pct is None:
                continue
            xerr = [[s.p50_ms - s.p50_ci_ms[0]], [s.p50_ci_ms[1] - s.p50_ms]] if s.p50_ci_ms else None
            yerr = ([[s.agreement_pct - s.agreement_ci_pct[0]], [s.agreement_ci_pct[1] - s.agreement_pct]]
                    if s.agreement_ci_pct else None)
            colour = "#C44E52" if s.winner else ("#4C72B0" if s.shipped else "0.45")
            ax.errorbar(s.p50_ms, s.agreement_pct, xerr=xerr, yerr=yerr, fmt="*" if s.winner else "o",
                        color=colour, ecolor=colour, elinewidth=0.8, capsize=2, markersize=9 if s.winner else 5)
            ax.annotate(s.name if len(s.name) <= 28 else s.name[:27] + "…", (s.p50_ms, s.agreement_pct),
                        xytext=(4, 3), textcoords="offset points", fontsize=6)
        ax.set_title(grid.variant, fontsize=9)
        ax.set_xlabel("p50 ms (95 % within-run)", fontsize=8)
        ax.set_ylabel(f"agree % on {run.tuning_photos} tuning photos", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"invoke tune {run.tuned_at}: agreement with FP32 against p50 (winner ★ red, shipped blue; "
                 "better: up and left)", fontsize=9)
    return plots.save_png(fig, path)


def section(build_dir: Path, results: list[Result]) -> list[str]:
    """The report's INT8-settings section; [] when the report has no INT8 row."""
    used = used_lines(results)
    if not used:
        return []
    parts = ["## INT8 settings: ISA-derived or chosen by measurement", "",
             "Which settings this report's INT8 rows were built with:", "", *used, ""]
    run = records.read_run(build_dir)
    if run is None:
        return parts + ["No `invoke tune` has run in this build folder (it is opt-in; docs/tuning.md): every INT8 "
                        "setting is the one target.py derives from the CPU's instruction set.", ""]
    phases = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in run.phases_s.items())
    parts += [f"The last `invoke tune` ran {_md(run.tuned_at)} on {_md(run.machine_id)} "
              f"(target {_md(run.target_key)}), at {run.threads} thread, in {run.wall_s:.0f} s ({phases}). "
              f"Photos: {run.calib_photos} calibration, {run.tuning_photos} tuning (the tune chose on them), "
              f"{run.eval_photos} evaluation (what the builds after it score); no photo is in two sets. "
              f"Reserving the tuning split took those {run.tuning_photos} photos out of the evaluation pool. "
              + _overlap_line(build_dir, run), "",
              f"The rule (exact McNemar at α = {run.alpha:g}; each setting timed in {run.timing.get('sessions')} "
              f"interleaved sessions of fresh processes on one tuning photo): {_md(run.rule)}", ""]
    for grid in run.grids:
        parts += [f"### `{_md(grid.variant)}`", "", f"Knobs: {_md(grid.knobs)}.", "", grid_table(grid), ""]
        if grid.dropped:
            parts += ["Not built, the same setting as another on this target: "
                      + "; ".join(f"`{_md(d['name'])}` ({_md(d['changes'])}) is `{_md(d['same_as'])}`"
                                  for d in grid.dropped) + ".", ""]
        line = side_line(grid)
        if line:
            parts += [line, ""]
    drawn = chart(run, Path(build_dir) / CHART)
    if drawn is not None:
        parts += [f"![agreement against p50 per tuned variant]({CHART.as_posix()})", ""]
    return parts
