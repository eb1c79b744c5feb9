"""build/report.md and its charts (build/plots/), rendered from result JSON files alone
(nothing is rerun). Result folders of several machines merge into one report."""
from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

from tabulate import tabulate

from mobilenet.build.target import RECORD_KEY, isa_mismatch, recorded_notes
from mobilenet.files import atomic_path, read_json, write_json
from mobilenet.freshness import is_fresh, module_files, record_stamp, stamp_path
from mobilenet.registry import (
    AO_DEPRECATED,
    LITE_DEPRECATED,
    REFERENCE_ID,
    TORCHSCRIPT_DEPRECATED,
    VARIANTS,
    display_order,
)
from mobilenet.report import plots, tune
from mobilenet.results import Result, group_by, load_result_files

# ../shared/weights/mobilenet_v2_float_from_qnnpack.pth: FP32 weights dequantized from an INT8 model.
INT8_GRID_WEIGHTS_SHA256 = "b25476ee0cc47985ada7a7e8aa5deb05e9a3b3751236837a6c6fb8536feae92c"


def _num(value, fmt: str = "{:.2f}", missing: str = "—") -> str:
    return missing if value is None else fmt.format(value)


_MARKDOWN_SPECIAL = str.maketrans({c: f"\\{c}" for c in "\\`*_[]<>|#!"})


def md(text) -> str:
    """Text from a result file, safe inside markdown and table cells: it is data, never markup."""
    return " ".join(str(text).split()).translate(_MARKDOWN_SPECIAL)


def _with_interval(value, interval, fmt: str) -> str:
    """'20.35 (19.10–21.60)': the estimate and a 95 % interval (stats.Interval); the caller's header
    or sentence says which (within-run or rerun)."""
    if value is None:
        return "—"
    if not interval:
        return fmt.format(value)
    return f"{fmt.format(value)} ({fmt.format(interval[0])}–{fmt.format(interval[1])})"


def _status(r: Result) -> str:
    if r.status == "FAILED":
        return f"**FAILED**: {md(r.status_reason)}"
    if r.status in ("DEGRADED", "INCONCLUSIVE"):
        return f"{r.status}: {md(r.status_reason)}"
    if r.status == "skipped":
        return f"skipped: {md(r.status_reason)}"
    return "ok"


def _status_word(r: Result) -> str:
    """The status without its reason: reasons are long, and one long cell widens every row."""
    return "**FAILED**" if r.status == "FAILED" else r.status


def isa_flag(r: Result) -> str | None:
    """'built for x86_64 avx2, measured on aarch64 asimd asimddp; ...': a row whose artifact's
    ISA-dependent settings were chosen for another CPU than the one that ran it (None: the same
    CPU, or a row that makes no such choice)."""
    options = r.build.get("options") if isinstance(r.build, dict) else None
    return isa_mismatch(r.built_for, r.measured_on, options.get(RECORD_KEY) if isinstance(options, dict) else None)


def _status_cell(r: Result) -> str:
    """The status word, and the row's flag when its artifact was built for another CPU: never
    silently. The flag's first half only; notes() gives what the settings would be there."""
    flag = isa_flag(r)
    return _status_word(r) + (f"; {md(flag.split(';')[0])}" if flag else "")


def pipe_table(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub table padded to its widest cell only (tabulate pads every header by two more),
    which keeps the main table within a laptop screen."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]

    def line(cells):
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + " |"
    return "\n".join([line(headers), "|" + "|".join("-" * (width + 2) for width in widths) + "|", *map(line, rows)])


# One interval per figure keeps the main table narrow, and it is the within-run one: the table is
# read to compare its rows, which ran in the same rounds and share the run's machine state, so
# the run-level term cancels between them and the within-run interval is the one that answers
# "is A faster than B". Where a rerun lands is a different question, for the details table
# and the summary's rerun line (rerun_line).
MAIN_HEADERS = ["variant", "size MB", "p50 ms (95% within-run)", "speed-up (95% within-run)", "top-1 %", "agree %",
                "status"]


def main_table(results: list[Result]) -> str:
    """What most readers compare: size, speed and accuracy; every other figure is in details_tables."""
    rows = []
    for r in sorted(results, key=lambda r: display_order(r.variant)):
        shown = r.measured  # a FAILED variant's latency is not a result
        rows.append([
            f"`{md(r.variant)}`", _num(r.size_mb) if r.size_mb else "—",
            _with_interval(r.p50_ms, r.p50_ci_ms, "{:.2f}") if shown else "—",
            _with_interval(r.speedup_vs_eager, r.speedup_ci, "{:.2f}×") if shown else "—",
            _plus_minus(r.top1_pct, r.top1_ci_pct), _plus_minus(r.agreement_pct, r.agreement_ci_pct),
            _status_cell(r)])
    return pipe_table(MAIN_HEADERS, rows)


# ---------------------------------------------------------------- accuracy and its uncertainty

def _plus_minus(value, interval) -> str:
    """'83.0 ±6': the main table's short form of a 95 % Wilson interval, the larger of its two sides
    in whole points rounded up (so never narrower than the interval); the details give both ends."""
    if value is None:
        return "—"
    if not interval:
        return f"{value:.1f}"
    return f"{value:.1f} ±{math.ceil(max(value - interval[0], interval[1] - value) - 1e-9):.0f}"


def _counted(value, count, photos, interval) -> str:
    """'83.0 (166/200; 77.2–87.6)': a percentage with its count and its 95 % Wilson interval."""
    if value is None:
        return "—"
    if count is None or not photos:
        return f"{value:.1f}"
    return f"{value:.1f} ({count}/{photos}" + (f"; {interval[0]:.1f}–{interval[1]:.1f})" if interval else ")")


def _difference(r: Result) -> str:
    """'-1.0 (-3.6 to +1.6)': top-1 minus FP32's in points, with its paired 95 % interval."""
    if r.top1_diff_pts is None:
        return "—"
    low, high = r.top1_diff_ci_pts or (None, None)
    return f"{r.top1_diff_pts:+.1f}" + (f" ({low:+.1f} to {high:+.1f})" if low is not None else "")


def _p_value(p: float | None) -> str:
    return "—" if p is None else f"{p:.2g}"


def _same_as_1t(r: Result) -> str:
    """A row at more than one thread: its top-1 answers against its own at 1 thread."""
    if r.agreement_with_1t_pct is None or r.answers_changed_photos is None:
        return "—"
    photos = r.eval_photos or r.env.eval_photos
    dlogit = "" if r.max_abs_dlogit_vs_1t is None else f"; max abs Δlogit {r.max_abs_dlogit_vs_1t:.2g}"
    return f"{r.agreement_with_1t_pct:.1f} ({photos - r.answers_changed_photos}/{photos}{dlogit})"


ACCURACY_HEADERS = ["variant", "top-1 % (n/N; 95%)", "top-5 % (n/N; 95%)", "agree % (n/N; 95%)",
                    "top-1 vs FP32 pts (95%)", "FP32 only right", "only this right", "McNemar p",
                    "same top-1 as at 1 thread %"]


def accuracy_table(results: list[Result]) -> str:
    """Each row's counts and 95 % intervals, and its paired comparison with eager FP32."""
    rows = []
    for r in sorted(results, key=lambda r: display_order(r.variant)):
        photos = r.eval_photos or r.env.eval_photos
        rows.append([
            f"`{md(r.variant)}`", _counted(r.top1_pct, r.top1_correct, photos, r.top1_ci_pct),
            _counted(r.top5_pct, r.top5_correct, photos, r.top5_ci_pct),
            _counted(r.agreement_pct, r.agreeing, photos, r.agreement_ci_pct), _difference(r),
            _num(r.fp32_only_right, "{}"), _num(r.variant_only_right, "{}"), _p_value(r.mcnemar_p), _same_as_1t(r)])
    return pipe_table(ACCURACY_HEADERS, rows)


def accuracy_note(results: list[Result]) -> list[str]:
    """How far to trust the accuracy columns, and which rows' answers moved with the thread count."""
    scored = [r for r in results if r.measured and r.agreement_pct is not None]
    if not scored:
        return []
    photos = scored[0].eval_photos or scored[0].env.eval_photos
    threads = scored[0].threads
    text = (f"Accuracy: {photos} evaluation photos, so one photo is {100 / photos:.2g} points. In the main table "
            "± is the 95 % Wilson interval of top-1 and of agreement with eager FP32 (its larger side, in whole "
            "points rounded up): figures a point or two apart are within it, and only the paired comparison can "
            "tell them apart. The details give the counts, both ends of each interval, and each variant's paired "
            "comparison with eager FP32 on the same photos: the photos only FP32 gets right and only the "
            "variant gets right, the exact McNemar p-value on those, and the 95 % interval of the top-1 "
            "difference (Newcombe's paired method, far narrower than comparing the two intervals).")
    if threads > 1:
        text += (f" At {threads} threads each row is scored on its own {threads}-thread answers (the first "
                 "session ran every photo), against eager FP32 at 1 thread, and a row whose answers differ from "
                 "its 1-thread answers is judged again on them.")
    lines = [text, ""]
    for r in sorted(scored, key=lambda r: display_order(r.variant)):
        if r.answers_changed_photos:
            lines.append(f"- `{md(r.variant)}` answers differently at {r.threads} threads than at 1 thread: another "
                         f"top-1 on {r.answers_changed_photos} of {r.eval_photos or photos} photos "
                         f"({r.agreement_with_1t_pct:.1f} % the same); its accuracy and status here are those of "
                         f"its {r.threads}-thread answers.")
    return [*lines, ""] if len(lines) > 2 else lines


LATENCY_HEADERS = ["variant", "p50 ms (95% rerun)", "speed-up (95% rerun)", "p90 ms", "p99 ms", "mean ms", "std ms",
                   "CV %", "round CV %", "p50 per session ms", "timed runs", "first inference ms", "load ms"]
RESOURCE_HEADERS = ["variant", "runtime", "vs FP32", "peak RSS MB", "CPU", "CPU s", "threads", "energy mJ/inf",
                    "max abs Δlogit", "tied top-1 rows", "status and reason"]


def _rerun_cell(value, interval, fmt: str) -> str:
    """A figure with its 95 % rerun interval, or that the interval is not yet known: never the
    bare figure, which would pass for a figure without uncertainty."""
    if value is None:
        return "—"
    return _with_interval(value, interval, fmt) if interval else "not yet known"


def details_tables(results: list[Result]) -> list[str]:
    """Every figure of each variant the main table leaves out, in two tables (one would be
    far wider than any screen): the latency distribution and start-up, then runtime,
    resources, numerical distance and the status with its reason. Every variant has a row,
    so the rows match the main table's; a FAILED variant's latency stays withheld."""
    reference = next((r for r in results if r.variant == REFERENCE_ID and r.size_mb), None)
    latency, resources = [], []
    for r in sorted(results, key=lambda r: display_order(r.variant)):
        shown, ran = r.measured, r.status != "skipped"  # a skipped variant never started
        latency.append([
            f"`{md(r.variant)}`", _rerun_cell(r.p50_ms, r.p50_rerun_ci_ms, "{:.2f}") if shown else "—",
            _rerun_cell(r.speedup_vs_eager, r.speedup_rerun_ci, "{:.2f}×") if shown else "—",
            *(_num(v if shown else None) for v in (r.p90_ms, r.p99_ms, r.mean_ms, r.std_ms)),
            _num(r.cv * 100 if shown and r.cv is not None else None, "{:.1f}"),
            _num(r.round_cv * 100 if shown and r.round_cv is not None else None, "{:.1f}"),
            " / ".join(f"{v:.2f}" for v in r.session_p50_ms) if shown and r.session_p50_ms else "—",
            _num(r.runs if shown else None, "{}"), _num(r.first_inference_ms if shown else None, "{:.1f}"),
            _num(r.load_ms, "{:.0f}")])
        resources.append([
            f"`{md(r.variant)}`", md(f"{r.runtime} {_runtime_version(r)}".strip()),
            _num(r.size_mb / reference.size_mb, "{:.2f}×") if reference and r.size_mb else "—",
            _num(r.peak_rss_mb, "{:.0f}"), _num(r.cpu_util_pct, "{:.0f}%"),
            _num(r.cpu_time_s), _threads_cell(r.threads, r.env.threads_effective) if ran else "—", _energy(r),
            _num(r.max_abs_dlogit, "{:.2g}"), _num(r.tied_top1_rows, "{}"), _status(r)])
    return ["Where a rerun on this machine lands (95 % rerun intervals: " + _rerun_basis(results)
            + "), the latency distribution and start-up:", "", pipe_table(LATENCY_HEADERS, latency), "",
            "Runtime, file size against eager FP32, memory, CPU, threads, energy, numerical distance from "
            "eager FP32, and the status with its reason:", "", pipe_table(RESOURCE_HEADERS, resources), "",
            "Accuracy: each percentage with its count of photos and its 95 % Wilson interval; top-1 against "
            "eager FP32 on the same photos (the difference in points with its paired 95 % interval, the photos "
            "only one of the two gets right, the exact McNemar p-value); at more than one thread, the top-1 "
            "answers that are the same as at 1 thread:", "", accuracy_table(results)]


def _energy(r: Result) -> str:
    if r.energy_mj_per_inference is not None:
        return f"{r.energy_mj_per_inference:.1f}"
    return "n/a (no RAPL)" if r.measured else "—"


def _runtime_version(r: Result) -> str:
    return r.runtime_version or ""


def _tied_with(best: Result, others: list[Result]) -> list[Result]:
    """The variants whose within-run p50 interval overlaps the best one's: not distinguishable
    from it in this run (they ran in the same rounds, so the run-level term is theirs alike)."""
    return [r for r in others if not (best.p50_ci_ms and r.p50_ci_ms and best.p50_ci_ms[1] < r.p50_ci_ms[0])]


def summary_lines(results: list[Result]) -> list[str]:
    """Claims the intervals support: a variant is named fastest only when its within-run p50
    interval clears the runner-up's; otherwise the tie is said, with every variant in it. The
    last line says how far a rerun would move the figures (rerun_line)."""
    measured = sorted((r for r in results if r.measured and r.p50_ms), key=lambda r: r.p50_ms)
    if not measured:
        return ["No variant produced a measurement."]
    fastest, rest = measured[0], measured[1:]
    tied = _tied_with(fastest, rest)
    if fastest.env.emulated:
        lines = ["- Fastest: no claim; the timings are emulated, not measured."]
    elif tied or not fastest.p50_ci_ms:
        names = ", ".join(f"`{md(r.variant)}` {_with_interval(r.p50_ms, r.p50_ci_ms, '{:.2f}')} ms"
                          for r in [fastest, *tied])
        why = "" if fastest.p50_ci_ms else " (one session: no interval, so no claim)"
        lines = [f"- Fastest: tied within noise{why}: {names}."]
    else:
        p50 = _with_interval(fastest.p50_ms, fastest.p50_ci_ms, '{:.2f}')
        lines = [f"- Fastest: `{md(fastest.variant)}`, p50 {p50} ms, "
                 + (f"{_with_interval(fastest.speedup_vs_eager, fastest.speedup_ci, '{:.2f}×')} eager FP32; "
                    if fastest.speedup_vs_eager else "") + "its "
                 f"within-run interval clears the runner-up `{md(rest[0].variant)}`"
                 f" ({_with_interval(rest[0].p50_ms, rest[0].p50_ci_ms, '{:.2f}')} ms)." if rest else
                 f"- Fastest: `{md(fastest.variant)}` (the only variant measured)."]
    by_size = sorted(measured, key=lambda r: r.size_mb)
    same_size = [r for r in by_size if abs(r.size_mb - by_size[0].size_mb) < 0.005]
    lines.append(f"- Smallest file: {', '.join(f'`{md(r.variant)}`' for r in same_size)}, {by_size[0].size_mb:.2f} MB"
                 + (" (tied)." if len(same_size) > 1 else "."))
    lines += accuracy_summary_lines(measured)
    flagged = [r for r in results if r.status in ("FAILED", "DEGRADED", "INCONCLUSIVE")]
    for r in flagged:
        lines.append(f"- `{md(r.variant)}` is {r.status}: {md(r.status_reason)}.")
    if not fastest.env.emulated:
        lines.append(rerun_line(measured))
    return lines


def _rerun_basis(results: list[Result]) -> str:
    return next((r.rerun_basis for r in results if r.measured and r.rerun_basis), "rerun spread not yet known")


def _half_widths(results: list[Result], value: str, interval: str) -> list[float]:
    return sorted((getattr(r, interval)[1] - getattr(r, interval)[0]) / 2 / getattr(r, value) * 100
                  for r in results if getattr(r, interval) and getattr(r, value))


def rerun_line(measured: list[Result]) -> str:
    """How far a rerun on this machine moves the figures: the rerun intervals' half-widths, or
    that they are not yet known (then the intervals shown compare this run's variants only)."""
    p50 = _half_widths(measured, "p50_ms", "p50_rerun_ci_ms")
    basis = md(_rerun_basis(measured))
    if not p50:
        return (f"- Rerun spread: {basis}. The intervals shown are within-run: they compare this run's "
                "variants, and a rerun may land outside them; `invoke bench --force` twice more on this "
                "machine gives the history.")
    speedup = [w for w in _half_widths(measured, "speedup_vs_eager", "speedup_rerun_ci") if w > 0]
    text = f"- Rerun spread: a rerun on this machine lands within ±{p50[len(p50) // 2]:.1f} % of each p50"
    text += (f" and ±{speedup[len(speedup) // 2]:.1f} % of each speed-up" if speedup else "")
    return text + f" (95 % rerun intervals, median over variants; in the details). Basis: {basis}."


def _per_mb(r: Result) -> str:
    """'22.8 (21.4–24.1) %/MB': top-1 per MB with its Wilson interval scaled by the (exact) size."""
    ratio = r.top1_pct / r.size_mb
    if not r.top1_ci_pct:
        return f"{ratio:.1f} %/MB"
    return f"{ratio:.1f} ({r.top1_ci_pct[0] / r.size_mb:.1f}–{r.top1_ci_pct[1] / r.size_mb:.1f}) %/MB"


def _paired_with_fp32(r: Result, reference: Result | None) -> tuple[float, float] | None:
    """r's top-1 minus FP32's, 95 % interval in points: [0, 0] for FP32 itself, None when unknown."""
    if reference is not None and r is reference:
        return 0.0, 0.0
    return tuple(r.top1_diff_ci_pts) if r.top1_diff_ci_pts else None


def more_per_mb(a: Result, b: Result, reference: Result | None) -> bool:
    """Do the photos show a's top-1 per MB above b's? Sizes are exact; only top-1 is uncertain.

    Either the two Wilson intervals, divided by the sizes, do not overlap; or the paired route
    does: both were compared with eager FP32 on the same photos, so a's top-1 is FP32's + dA and
    b's FP32's + dB, and a/size_a - b/size_b stays above 0 at the least favourable end of every
    interval (FP32's top-1, dA, dB). The paired route is much narrower, since the photos' own
    difficulty cancels from dA and dB. Each end used is one side of a 95 % interval (wrong 2.5 %
    of the time), so a claim is wrong at most 5 % of the time by the first route and 7.5 % by the
    second (union bound; in practice far less, as every end would have to miss at once).
    Without intervals (older results) nothing is shown."""
    if a.top1_ci_pct and b.top1_ci_pct and a.top1_ci_pct[0] / a.size_mb > b.top1_ci_pct[1] / b.size_mb:
        return True
    da, db = _paired_with_fp32(a, reference), _paired_with_fp32(b, reference)
    if reference is None or not reference.top1_ci_pct or da is None or db is None:
        return False
    weight = 1 / a.size_mb - 1 / b.size_mb
    fp32_top1 = reference.top1_ci_pct[0] if weight > 0 else reference.top1_ci_pct[1]
    return da[0] / a.size_mb - db[1] / b.size_mb + fp32_top1 * weight > 0


def accuracy_summary_lines(measured: list[Result]) -> list[str]:
    """The accuracy claims the photos support: a best accuracy per MB only when its interval (or
    the paired comparison with FP32) clears every other variant's, otherwise the tie with each
    variant in it; a variant more or less accurate than FP32 only when the paired interval of the
    difference excludes 0. And the rows whose answers changed with the thread count."""
    scored = [r for r in measured if r.top1_pct is not None and r.size_mb]
    lines = []
    if scored:
        reference = next((r for r in scored if r.variant == REFERENCE_ID), None)
        ranked = sorted(scored, key=lambda r: -r.top1_pct / r.size_mb)
        best, rest = ranked[0], ranked[1:]
        tied = [r for r in rest if not more_per_mb(best, r, reference)]
        if tied:
            names = ", ".join(f"`{md(r.variant)}` {_per_mb(r)}" for r in [best, *tied])
            why = (f"within what {_photos(best)} photos can tell" if all(r.top1_ci_pct for r in [best, *tied])
                   else "no accuracy intervals recorded, so no claim")
            lines.append(f"- Best accuracy per MB: tied ({why}): {names}.")
        else:
            top1 = _plus_minus(best.top1_pct, best.top1_ci_pct)
            lines.append(f"- Best accuracy per MB: `{md(best.variant)}`, {top1} % top-1 in {best.size_mb:.2f} MB "
                         f"({_per_mb(best)})" + (f"; it clears the runner-up `{md(rest[0].variant)}` "
                                                 f"({_per_mb(rest[0])})." if rest else " (the only one scored)."))
        paired = [r for r in sorted(scored, key=lambda r: display_order(r.variant)) if r.top1_diff_ci_pts]
        if paired:
            def said(r):
                return (f"`{md(r.variant)}` {r.top1_diff_pts:+.1f} pts ({r.top1_diff_ci_pts[0]:+.1f} to "
                        f"{r.top1_diff_ci_pts[1]:+.1f}, McNemar p={r.mcnemar_p:.2g})")
            lower = [said(r) for r in paired if r.top1_diff_ci_pts[1] < 0]
            higher = [said(r) for r in paired if r.top1_diff_ci_pts[0] > 0]
            tied_fp32 = [f"`{md(r.variant)}`" for r in paired if r.top1_diff_ci_pts[0] <= 0 <= r.top1_diff_ci_pts[1]]
            parts = ([f"less accurate: {', '.join(lower)}"] if lower else []) + (
                [f"more accurate: {', '.join(higher)}"] if higher else []) + (
                [f"tied (the paired 95 % interval holds 0): {', '.join(tied_fp32)}"] if tied_fp32 else [])
            lines.append(f"- Top-1 against eager FP32 on the same photos: {'; '.join(parts)}.")
    moved = [r for r in measured if r.answers_changed_photos]
    if moved:
        lines.append("- Answers change with the thread count: " + ", ".join(
            f"`{md(r.variant)}` (another top-1 than at 1 thread on {r.answers_changed_photos} of {_photos(r)} photos)"
            for r in moved) + f"; their accuracy here is their {moved[0].threads}-thread answers'.")
    return lines


def _photos(r: Result) -> int:
    return r.eval_photos or r.env.eval_photos


def _threads_cell(requested: int, effective: int | None) -> str:
    if effective is None:
        return f"{requested} (requested; the runtime cannot report)"
    return f"{requested} → {effective}"


def _photo_set(photos: int | None, classes: int | None, kind: str) -> str:
    """'200 evaluation photos of 200 classes': what a set's accuracy can speak for."""
    if photos is None:
        return f"{kind} photos not recorded"
    return f"{photos} {kind} photos" + (f" of {classes} classes" if classes else "")


def environment_block(results: list[Result]) -> str:
    env = results[0].env
    threads = sorted({_threads_cell(r.threads, r.env.threads_effective) for r in results if r.measured})
    versions = {}
    for r in results:
        versions.update(r.env.runtime_versions or {})
    affinity = sorted({cpu for r in results for cpu in r.cpu_affinity})
    load = " → ".join(f"{v:.2f}" for v in env.load_avg_1min) or "—"
    rows = [
        ["machine", env.machine_id + (" — emulated: not a measurement" if env.emulated else "")],
        ["CPU", f"{env.cpu_model}, {env.logical_cores} logical cores"],
        ["ISA flags", ", ".join(env.cpu_flags) or "—"], ["frequency governor", env.cpu_governor or "not readable"],
        ["OS", env.os], ["Python", env.python], ["torch / torchvision", f"{env.torch} / {env.torchvision}"],
        ["runtimes", ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or "—"],
        ["threads (requested → effective)", "; ".join(threads) or "—"],
        ["worker CPU affinity", ", ".join(map(str, affinity)) or "—"],
        ["machine load during the run", f"load average {load}; busy {_num(env.busy_pct, '{:.0f}%')}, "
                                         f"steal {_num(env.steal_pct, '{:.1f}%')} (/proc/stat)"],
        ["weights", f"{env.weights_source} (sha256 {env.weights_sha256[:16]}…)"],
        ["images", f"{env.image_set}; {_photo_set(env.calib_photos, env.calib_classes, 'calibration')}, "
                   f"{_photo_set(env.eval_photos, env.eval_classes, 'evaluation')}"
                   + ("" if env.labelled else " (unlabelled: agreement only)")
                   + (f" (data sha256 {env.data_sha256[:16]}…)" if env.data_sha256 else "")],
        ["energy", env.energy_source],
    ]
    return tabulate([[k, md(v)] for k, v in rows], headers=["", ""], tablefmt="github")


def timing_note(results: list[Result]) -> str:
    measured = [r for r in results if r.measured and r.rounds]
    if not measured:
        return ""
    sessions, rounds = measured[0].sessions or 1, measured[0].rounds
    round_cvs = [r.round_cv for r in measured if r.round_cv is not None]
    widths = [(r.speedup_ci[1] - r.speedup_ci[0]) / 2 / r.speedup_vs_eager * 100 for r in measured
              if r.speedup_ci and r.variant != REFERENCE_ID]  # the reference's is 1 by definition
    width = (f" The speed-up within-run intervals' half-widths run from {min(widths):.1f} to {max(widths):.1f} % "
             f"(median {sorted(widths)[len(widths) // 2]:.1f} %)." if widths else "")
    processes = max((r.reference_processes or 1) for r in measured)
    reference = (f"the geometric mean of {processes} fresh eager FP32 processes timed in the same rounds, so that "
                 "one process's speed draw does not scale every speed-up of its session" if processes > 1
                 else "eager FP32 in the same round")
    return (f"Timing: {sessions} sessions; in each, every variant runs in a fresh process with threads set "
            f"explicitly, warm-up excluded, timed in interleaved rounds in rotating order ({rounds} rounds in all, "
            f"{min(r.runs for r in measured)}+ timed calls per variant). p50 is the geometric mean of the "
            f"per-session medians and speed-up the geometric mean of the per-session speed-ups (each the "
            f"median of that session's per-round ratios to {reference}). In brackets in the main table is the "
            f"95 % within-run interval: a confidence interval for this run's figure (Student-t over sessions on "
            f"the log scale), because the speed of a process is itself a random draw that rounds inside one "
            f"process cannot average out. It is the one to compare variants of this run by: they share the "
            f"run's machine state. It is not where a rerun lands: a rerun draws new processes and finds the "
            f"machine itself a few percent faster or slower, for every variant at once. The details give the "
            f"95 % rerun interval for that, which adds this machine's run-to-run spread from its earlier runs "
            f"({md(_rerun_basis(measured))}).{width} p90/p99 pool every call. "
            f"Per-round medians vary with a CV of {min(round_cvs) * 100:.1f}–{max(round_cvs) * 100:.1f} % "
            f"across variants."
            + (f" Preprocessing (decode, resize, crop, normalise) takes {measured[0].preprocess_ms:.1f} ms per "
               "photo for every variant and is not included." if measured[0].preprocess_ms is not None else
               " The photos arrive preprocessed (device mode): no preprocessing is timed."))


HARNESS_GOAL_PCT = 2.0  # how far above the runtime's own program our per-call cost may be
# The split's step names (bench/native.py), as the report says them.
SPLIT_STEPS = {"input": "input conversion and copy", "output": "output copy and conversion"}


def _harness_split(split: dict, difference_ms: float, median_ms: float) -> tuple[str, float]:
    """Where our call's time goes, from the split bench/native.py measured in one process, and the
    per-call cost it puts on our harness against the program (ms)."""
    parts = [f"{md(SPLIT_STEPS.get(step, step))} {ms:.3f} ms" for step, ms in split["steps_ms"].items()]
    parts.append(f"Python calls and bindings between them {split['rest_ms']:+.3f} ms")
    clocked = split.get("clock_ms") is not None
    against = ("the runtime's own clock for the same call, the clock the program reports" if clocked
               else "the runtime's inference call timed alone")
    text = (f" Where it goes (our call split in one process, medians of {split['calls']} calls): our runner's "
            f"own work around the inference {split['own_ms']:.3f} ms per call ({'; '.join(parts)}), against "
            f"{against} ({split['inference_ms']:.2f} ms in Python"
            + (f", {split['clock_ms']:.2f} ms on that clock" if clocked else "") + ")")
    accounted = split["own_ms"]
    if split.get("api_difference_ms") is not None:
        accounted += split["api_difference_ms"]
        text += (f"; the program's own call, rebuilt in that process, {split['program_call_ms']:.2f} ms, and our "
                 f"inference call {split['api_difference_ms']:+.3f} ms from it, paired call by call (the APIs' "
                 f"difference)")
    text += (f". That accounts for {accounted:+.2f} ms ({accounted / median_ms * 100:+.1f} %); the other "
             f"{difference_ms - accounted:+.2f} ms is the spread between processes: the program's and our "
             f"workers' are separate draws of this machine's speed.")
    return text, accounted


def _session_paired_pct(r: Result, native: dict) -> tuple[float, int] | None:
    """(median over sessions of our session median against the program's run right after that
    session, in %; the number of pairs), where the result says which session each run followed."""
    index = native.get("session_index")
    if not index or len(r.session_p50_ms) != r.sessions:
        return None
    ratios = sorted(r.session_p50_ms[i] / ms for i, ms in zip(index, native["session_median_ms"], strict=True)
                    if 0 <= i < len(r.session_p50_ms))
    if not ratios:
        return None
    middle = len(ratios) // 2
    median = ratios[middle] if len(ratios) % 2 else (ratios[middle - 1] + ratios[middle]) / 2
    return (median - 1) * 100, len(ratios)


def harness_lines(results: list[Result]) -> list[str]:
    """Our p50 against the runtime's own benchmark program on the same artifact and threads, and
    where the difference goes."""
    lines = []
    for r in results:
        native = r.native_benchmark
        if not (r.measured and native and native.get("median_ms")):
            continue
        median = native["median_ms"]
        difference = r.p50_ms - median
        pct = difference / median * 100
        interval = ""
        if r.p50_ci_ms:
            low, high = r.p50_ci_ms
            where = "inside" if low <= median <= high else "below" if median < low else "above"
            interval = (f" (95 % within-run interval {low:.2f}–{high:.2f}; the program's median is {where} it"
                        + (", so these two figures cannot tell our harness's cost from the machine's drift"
                           if where == "inside" else "") + ")")
        times = f"; it times {md(native['times'])}" if native.get("times") else ""
        api = (f" **Not the same API**: {md(native['other_api'])}." if native.get("other_api")
               else " The same API as our runner." if "other_api" in native else "")
        paired = _session_paired_pct(r, native)
        session_text = (f" Session by session (each program run against the session it followed), our median "
                        f"is {paired[0]:+.1f} % from the program's (median of {paired[1]} pairs), which one slow "
                        f"session does not move." if paired else "")
        split_text, cost = (_harness_split(native["split"], difference, median) if native.get("split")
                            else ("", difference))
        cost_pct = round(cost / median * 100, 1)  # judged as shown, so "+2.0 %" is never "beyond 2 %"
        goal = (f" Our harness's cost per call, {'from the split' if native.get('split') else 'from these figures'}: "
                f"{cost:+.2f} ms ({cost_pct:+.1f} %), {'within' if cost_pct <= HARNESS_GOAL_PCT else 'beyond'} "
                f"the {HARNESS_GOAL_PCT:g} % goal.")
        lines.append(f"- `{md(r.variant)}`: {md(native['tool'])} (the runtime's own benchmark program, run on the "
                     f"same file and threads between our sessions, {native['sessions']} × "
                     f"{native['calls_per_session']} calls{times}) median {median:.2f} ms; our p50 "
                     f"{r.p50_ms:.2f} ms{interval}: {difference:+.2f} ms per call ({pct:+.1f} %).{api}"
                     f"{session_text}{split_text}{goal}")
    return lines


def cross_isa_lines(results: list[Result]) -> list[str]:
    """Device mode: does the device give the same answers as the machine that built the artifacts?"""
    rows = [r for r in sorted(results, key=lambda r: display_order(r.variant)) if r.env.device_of]
    if not rows:
        return []
    controller = rows[0].env.device_of
    table = [[f"`{md(r.variant)}`",
              _num(r.cross_isa_agreement_pct, "{:.1f}") if r.measured else r.status,
              _num(r.cross_isa_max_abs_dlogit, "{:.2g}") if r.measured else "—",
              _num(r.agreement_pct, "{:.1f}") if r.measured else "—", _built_for_cell(r),
              "" if r.measured else md(r.status_reason)] for r in rows]
    install = rows[0].env.device_install_mb
    return [f"Same answers on this device as on {md(controller)}? Each artifact was built and checked on "
            f"{md(controller)}, run here on {rows[0].env.eval_photos} evaluation photos, and its logits "
            "compared with the same artifact's on that machine (its build check, at 1 thread): this is where "
            "ARM's and x86's kernels differ. An INT8 artifact whose ISA-dependent settings come out otherwise "
            "for this device's CPU was built there for this CPU (\"built for\"), and that one ran on both."
            + (f" The runtimes' virtual environment on the device takes {install:.0f} MB." if install else ""), "",
            tabulate(table, headers=["variant", "top-1 agreement with the same artifact there %",
                                     "max abs Δlogit", "agreement with eager FP32 there %", "built for", "note"],
                     tablefmt="github", disable_numparse=True), ""]


def _built_for_cell(r: Result) -> str:
    """The CPU the row's ISA-dependent settings were chosen for; 'any CPU' where it has none."""
    if not r.built_for:
        return "any CPU (no ISA-dependent setting)"
    here = r.measured_on and not isa_flag(r)
    flags = " ".join(map(str, r.built_for.get("isa_flags") or []))
    return md(f"{r.built_for.get('arch')} {flags}".strip()) + (" (this device's)" if here else "")


def notes(results: list[Result]) -> list[str]:
    env = results[0].env
    out = []
    if env.weights_random:
        out.append("- **Random weights**: this was a latency-only run; every accuracy figure is meaningless.")
    elif env.weights_sha256 == INT8_GRID_WEIGHTS_SHA256:
        out.append("- Weights: the offline stand-in rebuilt from torchvision's INT8 qnnpack MobileNet-V2 "
                   "(dequantized to FP32). Its weights already sit on an INT8 grid, so the INT8 accuracy "
                   "drops measured here are optimistic compared with torchvision's original FP32 weights.")
    else:
        out.append(f"- Weights: {md(env.weights_source)}.")
    out.append("- The evaluation photos are ImageNet sample images, one per class; they are easier than "
               "the ImageNet validation set, so top-1 here is higher than published figures.")
    by_id = {r.variant: r for r in results}
    mobile = by_id.get("fp32-mobile")
    if mobile and mobile.build.get("options", {}).get("optimize_for_mobile_note"):
        out.append(f"- `fp32-mobile`: optimize_for_mobile {mobile.build['options']['optimize_for_mobile_note']}.")
    out.append("- How the INT8 variants were made (what was tried, and why these settings):")
    statuses = {r.variant: r.status for r in results}
    for variant in VARIANTS:
        if variant.tuning and variant.id in statuses:
            flagged = statuses[variant.id] in ("DEGRADED", "INCONCLUSIVE", "FAILED")
            flag = f" **{statuses[variant.id]}** —" if flagged else ""
            # The ISA-dependent settings are what this run's builds recorded, with their reasons.
            chosen = recorded_notes([(r.env.machine_id, r.build.get("options")) for r in results
                                     if r.variant == variant.id])
            out.append(f"  - `{variant.id}`:{flag} {variant.tuning}" + (f" {md(chosen)}" if chosen else "")
                       + tune.tuned_note([r for r in results if r.variant == variant.id]))
    flagged = [(r, isa_flag(r)) for r in sorted(results, key=lambda r: display_order(r.variant))]
    flagged = list({r.variant: (r, flag) for r, flag in flagged if flag}.values())
    if flagged:
        out.append("- Built for another CPU than the one that measured it (its ISA-dependent settings, above, "
                   "were chosen for the CPU it was built for):")
        out += [f"  - `{md(r.variant)}`: {md(flag)}." for r, flag in flagged]
    out.append("- Deprecated paths (torch 2.14), still measured because apps ship them today:")
    for text in (TORCHSCRIPT_DEPRECATED, LITE_DEPRECATED, AO_DEPRECATED):
        out.append(f"  - {text}")
    out.append("  - The modern path is torch.export → ExecuTorch (`executorch-*` rows), with PT2E for INT8.")
    out += status_legend()
    out.append("- Top-1, top-5, agreement and the gate share one rule: classes are ranked by logit, ties to the "
               "lower class index (what argmax does); `tied top-1 rows` counts the photos whose maximum "
               "logit is shared, where that rule decides.")
    return out


def status_legend() -> list[str]:
    """What each status means. The gate (mobilenet.accuracy) decides on the ends of 95 % intervals,
    Wilson's for agreement with FP32 and Newcombe's paired one for the top-1 difference from FP32,
    against margins fixed in advance; "surely" below means the whole interval is past the margin."""
    return [
        "- Status (the correctness gate on the evaluation photos, decided on 95 % intervals: Wilson's for top-1 "
        "agreement with eager FP32, Newcombe's paired interval for the top-1 difference from FP32; an FP32 "
        "conversion must instead give eager's top-1 on every photo with max abs Δlogit ≤ 1e-3):",
        "  - ok: the intervals show at least 90 % agreement and at most 2 points of top-1 lost. It says the "
        "loss is within those margins, not that there is none.",
        "  - DEGRADED: agreement surely below 90 %, or top-1 surely more than 2 points down. Timed, shown and "
        "flagged; exit code 0.",
        "  - INCONCLUSIVE: the photos cannot tell ok from DEGRADED: an interval straddles a margin. The reason "
        "gives the intervals and about how many photos would tell. Timed, shown and flagged like DEGRADED; it "
        "never turns into ok, and the exit code stays 0.",
        "  - FAILED: agreement surely below 80 %, top-1 surely more than 5 points down, an FP32 conversion that "
        "does not match eager, or a build error. Latency withheld; `invoke bench`, `invoke report` and the chain "
        "exit 1 once every other variant has run and the report is written.",
        "  - skipped: the runtime is not installed or not supported on this machine; exit code 0.",
        "  - At more than one thread a row is judged on its own thread count's answers when they differ from "
        "its 1-thread answers, which the build check judged.",
    ]


def scaling_table(results: list[Result]) -> str:
    """p50 per variant at each thread count, and how much faster each count is than the lowest."""
    counts = sorted({r.threads for r in results})
    p50 = {(r.variant, r.threads): r.p50_ms for r in results if r.measured}
    rows = []
    for variant in sorted({r.variant for r in results}, key=lambda v: display_order(v)):
        base = p50.get((variant, counts[0]))
        cells = [_num(p50.get((variant, t))) for t in counts]
        scaling = [_num(base / p50[variant, t] if base and (variant, t) in p50 else None, "{:.2f}×")
                   for t in counts[1:]]
        rows.append([f"`{md(variant)}`", *cells, *scaling])
    headers = (["variant"] + [f"p50 ms @ {t}t" for t in counts]
               + [f"scaling × {t}t vs {counts[0]}t" for t in counts[1:]])
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def _cross_cell(r: Result | None) -> str:
    if r is None:
        return "—"
    if not r.measured:
        return r.status
    if r.env.emulated:
        return "emulated: not a measurement"
    return f"{r.p50_ms:.2f} ms ({_with_interval(r.speedup_vs_eager, r.speedup_ci, '{:.2f}×')})"


def cross_machine_table(results: list[Result], threads: int) -> str:
    """Rows = variants, columns = machines; each speed-up is against that machine's own eager FP32."""
    machines = list(dict.fromkeys(r.env.machine_id for r in results))
    cell = {(r.env.machine_id, r.variant): r for r in results if r.threads == threads}
    variants = sorted({v for _, v in cell}, key=lambda v: display_order(v))
    rows = [[f"`{md(v)}`", *(_cross_cell(cell.get((m, v))) for m in machines)] for v in variants]
    return tabulate(rows, headers=["variant", *map(md, machines)], tablefmt="github", disable_numparse=True)


def cross_machine_section(results: list[Result]) -> list[str]:
    parts = ["## Across machines", "",
             "p50 latency per variant on each machine, and in brackets its speed-up against that "
             "machine's own eager FP32 with its 95 % within-run interval (the same figures as in the machine's "
             "table below).", ""]
    for threads in sorted({r.threads for r in results}):
        parts += [f"### {plots.threads_label(threads)}", "", cross_machine_table(results, threads), ""]
    return parts


def _image(figures: dict, key: tuple, alt: str) -> list[str]:
    return [f"![{alt}]({figures[key]})", ""] if key in figures else []


def render_machine(results: list[Result], figures: dict | None = None) -> str:
    """One machine's section: per thread count the main table, then how it was timed and the
    details; the environment block comes last, after the numbers it describes."""
    figures = figures or {}
    machine = results[0].env.machine_id
    parts = []
    if results[0].env.emulated:
        parts += ["**Emulated: not a measurement.** This machine ran under an emulator (qemu-user): its "
                  "timings say nothing about a real device and are not charted; its accuracy and agreement "
                  "figures are real.", ""]
    by_threads = group_by(results, lambda r: r.threads)
    for threads in sorted(by_threads):
        group, label = by_threads[threads], plots.threads_label(threads)
        parts += [f"### {label}", "", main_table(group), "", timing_note(group), "",
                  *accuracy_note(group),
                  *harness_lines(group), "",
                  *cross_isa_lines(group),
                  "<details><summary>Details: runtime, size vs FP32, p90/p99 and the rest of the latency "
                  "distribution, load and first inference, memory, CPU, threads, energy, numerical distance, "
                  "status reasons, accuracy counts and intervals, the paired comparison with FP32</summary>",
                  "", *details_tables(group), "", "</details>", "",
                  *_image(figures, (machine, "latency", threads), f"p50 latency per variant at {label}"),
                  *_image(figures, (machine, "tradeoff", threads), f"size vs latency at {label}")]
    if len(by_threads) > 1:
        parts += ["### Thread scaling", "",
                  "p50 at each thread count; scaling × is how many times faster than at the lowest count.", "",
                  scaling_table(results), "", *_image(figures, (machine, "scaling", None), "thread scaling")]
    parts += ["### Environment", "", environment_block(results), ""]
    return "\n".join(parts)


def summary_section(by_machine: dict[str, list[Result]]) -> list[str]:
    """The answer first: for each machine and thread count, what summary_lines can claim."""
    parts = ["## Summary", ""]
    for machine, group in by_machine.items():
        by_threads = group_by(group, lambda r: r.threads)
        for threads in sorted(by_threads):
            parts += [f"**{md(machine)}**, {plots.threads_label(threads)}:", "",
                      *summary_lines(by_threads[threads]), ""]
    return parts


def unique(results: list[Result]) -> tuple[list[Result], list[Result]]:
    """(kept, dropped): one result per machine, variant and thread count, the first one seen."""
    seen, kept, dropped = set(), [], []
    for r in results:
        key = (r.env.machine_id, r.variant, r.threads)
        (dropped if key in seen else kept).append(r)
        seen.add(key)
    return kept, dropped


def render(results: list[Result], figures: dict | None = None, dropped: list[Result] = ()) -> str:
    """The report text; `figures` maps (machine_id, kind, threads) to a path relative to report.md."""
    if not results:
        raise ValueError("no results to report: run `invoke bench` first")
    by_machine = group_by(results, lambda r: r.env.machine_id)
    parts = ["# MobileNet-V2 deployment benchmark", "",
             f"Rendered {dt.datetime.now().strftime('%Y-%m-%d %H:%M')} from {len(results)} result files"
             f" ({len(by_machine)} machine{'s' if len(by_machine) > 1 else ''}).", "",
             *summary_section(by_machine)]
    if dropped:
        parts += [f"Ignored {len(dropped)} result(s) already given by an earlier folder (same machine, "
                  f"variant and threads): " + ", ".join(f"`{md(r.variant)}@{r.threads}t`" for r in dropped), ""]
    if len(by_machine) > 1:
        parts += cross_machine_section(results)
    for machine, group in by_machine.items():
        parts += [f"## {md(machine)}", "", render_machine(group, figures), "## Notes", "", *notes(group), ""]
    return "\n".join(parts)


def result_folders(build_dir: Path, extra: list[Path] = ()) -> list[Path]:
    """build/results, then every build/remote/<host>/results, then `extra`; each folder once."""
    build_dir = Path(build_dir)
    folders = [build_dir / "results", *sorted(build_dir.glob("remote/*/results")), *map(Path, extra)]
    missing = [f for f in extra if not Path(f).is_dir()]
    if missing:
        raise ValueError(f"no such results folder: {missing[0]}")
    once = {}
    for folder in folders:
        once.setdefault(folder.resolve(), folder)
    return list(once.values())


def check_not_mixed(files: list[tuple[Path, Result]]) -> None:
    """One environment block must describe one set of weights and photos: stop, naming the
    files, when results of one machine were made from different ones."""
    by_machine = group_by(files, lambda pr: pr[1].env.machine_id)
    for machine, group in by_machine.items():
        kinds = group_by(group, lambda pr: (pr[1].env.weights_sha256, pr[1].env.data_sha256 or pr[1].env.image_set))
        if len(kinds) > 1:
            examples = "; ".join(f"{members[0][0]} (weights {w[:12]}…, photos {d[:12]}…)"
                                 for (w, d), members in kinds.items())
            raise ValueError(f"results of machine {machine!r} were made with different weights or photos: "
                             f"{examples}. Rerun `invoke bench --force` for every variant, or give each set its "
                             f"own --tag")


def _charts(results: list[Result], result_files: list[Path], build_dir: Path) -> dict:
    """{(machine_id, kind, threads): chart path relative to build_dir}, redrawn only when a
    result file or the charting code changed (drawing is most of a no-op report's time)."""
    plots_dir = build_dir / "plots"
    index = build_dir / "stamps" / "report-charts.index.json"
    stamp = stamp_path(build_dir / "stamps", "report-charts")
    inputs = sorted(result_files) + module_files("mobilenet.report.plots")
    wanted = {"results": sorted(str(p) for p in result_files)}
    if index.exists():
        entries = read_json(index)
        fresh, _ = is_fresh([index, *(build_dir / entry["path"] for entry in entries)], inputs, wanted, stamp)
        if fresh:
            return {tuple(entry["key"]): entry["path"] for entry in entries}
    figures = {key: path.relative_to(build_dir).as_posix()
               for key, path in plots.write_all(results, plots_dir).items()}
    write_json(index, [{"key": list(key), "path": path} for key, path in figures.items()])
    record_stamp(stamp, wanted, inputs)
    return figures


def write(results_dirs: list[Path], out: Path, sections: list[str] = ()) -> tuple[Path, list[str]]:
    """report.md at `out`, its charts under plots/ beside it, linked by relative paths;
    `sections` are further markdown lines made elsewhere from files of their own (explain).

    Returns the path and the FAILED rows (variant@threads), which the caller turns into a
    non-zero exit after the report is written.
    """
    out = Path(out)
    files = [pr for folder in results_dirs for pr in load_result_files(folder)]
    results, dropped = unique([r for _, r in files])
    kept = {id(r) for r in results}
    check_not_mixed([pr for pr in files if id(pr[1]) in kept])
    figures = _charts(results, [path for path, _ in files], out.parent)
    sections = [*tune.section(out.parent, results), *sections]  # which INT8 settings, and the last tune's grid
    text = render(results, figures, dropped) + ("\n" + "\n".join(sections) + "\n" if sections else "")
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    return out, [f"{r.variant}@{r.threads}t" for r in results if r.status == "FAILED"]
