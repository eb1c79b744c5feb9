"""build/report.md and its charts (build/plots/), rendered from result JSON files alone
(nothing is rerun). Result folders of several machines merge into one report."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from tabulate import tabulate

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
from mobilenet.report import plots
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
    """'20.35 (19.10–21.60)': the estimate and its 95 % rerun interval (timing.Interval)."""
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


def pipe_table(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub table padded to its widest cell only (tabulate pads every header by two more),
    which keeps the main table within a laptop screen."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]

    def line(cells):
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + " |"
    return "\n".join([line(headers), "|" + "|".join("-" * (width + 2) for width in widths) + "|", *map(line, rows)])


MAIN_HEADERS = ["variant", "size MB", "p50 ms (95% rerun)", "speed-up (95% rerun)", "top-1 %", "agree %", "status"]


def main_table(results: list[Result]) -> str:
    """What most readers compare: size, speed and accuracy; every other figure is in details_tables."""
    rows = []
    for r in sorted(results, key=lambda r: display_order(r.variant)):
        shown = r.measured  # a FAILED variant's latency is not a result
        rows.append([
            f"`{md(r.variant)}`", _num(r.size_mb) if r.size_mb else "—",
            _with_interval(r.p50_ms, r.p50_ci_ms, "{:.2f}") if shown else "—",
            _with_interval(r.speedup_vs_eager, r.speedup_ci, "{:.2f}×") if shown else "—",
            _num(r.top1_pct, "{:.1f}"), _num(r.agreement_pct, "{:.1f}"), _status_word(r)])
    return pipe_table(MAIN_HEADERS, rows)


LATENCY_HEADERS = ["variant", "p90 ms", "p99 ms", "mean ms", "std ms", "CV %", "round CV %", "p50 per session ms",
                   "timed runs", "first inference ms", "load ms"]
RESOURCE_HEADERS = ["variant", "runtime", "vs FP32", "peak RSS MB", "CPU", "CPU s", "threads", "energy mJ/inf",
                    "top-5 %", "max abs Δlogit", "tied top-1 rows", "status and reason"]


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
            f"`{md(r.variant)}`", *(_num(v if shown else None) for v in (r.p90_ms, r.p99_ms, r.mean_ms, r.std_ms)),
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
            _num(r.top5_pct, "{:.1f}"),
            _num(r.max_abs_dlogit, "{:.2g}"), _num(r.tied_top1_rows, "{}"), _status(r)])
    return ["Latency distribution and start-up:", "", pipe_table(LATENCY_HEADERS, latency), "",
            "Runtime, file size against eager FP32, memory, CPU, threads, energy, top-5, numerical distance from "
            "eager FP32, and the status with its reason:", "", pipe_table(RESOURCE_HEADERS, resources)]


def _energy(r: Result) -> str:
    if r.energy_mj_per_inference is not None:
        return f"{r.energy_mj_per_inference:.1f}"
    return "n/a (no RAPL)" if r.measured else "—"


def _runtime_version(r: Result) -> str:
    return r.runtime_version or ""


def _tied_with(best: Result, others: list[Result]) -> list[Result]:
    """The variants whose p50 interval overlaps the best one's: not distinguishable from it."""
    return [r for r in others if not (best.p50_ci_ms and r.p50_ci_ms and best.p50_ci_ms[1] < r.p50_ci_ms[0])]


def summary_lines(results: list[Result]) -> list[str]:
    """Claims the intervals support: a variant is named fastest only when its p50 interval
    clears the runner-up's; otherwise the tie is said, with every variant in it."""
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
                 f"interval clears the runner-up `{md(rest[0].variant)}`"
                 f" ({_with_interval(rest[0].p50_ms, rest[0].p50_ci_ms, '{:.2f}')} ms)." if rest else
                 f"- Fastest: `{md(fastest.variant)}` (the only variant measured)."]
    by_size = sorted(measured, key=lambda r: r.size_mb)
    same_size = [r for r in by_size if abs(r.size_mb - by_size[0].size_mb) < 0.005]
    lines.append(f"- Smallest file: {', '.join(f'`{md(r.variant)}`' for r in same_size)}, {by_size[0].size_mb:.2f} MB"
                 + (" (tied)." if len(same_size) > 1 else "."))
    scored = [r for r in measured if r.top1_pct is not None]
    if scored:
        best = max(scored, key=lambda r: r.top1_pct / r.size_mb)
        lines.append(f"- Best accuracy per MB: `{md(best.variant)}`, {best.top1_pct:.1f} % top-1 in "
                     f"{best.size_mb:.2f} MB ({best.top1_pct / best.size_mb:.1f} %/MB).")
    flagged = [r for r in results if r.status in ("FAILED", "DEGRADED", "INCONCLUSIVE")]
    for r in flagged:
        lines.append(f"- `{md(r.variant)}` is {r.status}: {md(r.status_reason)}.")
    return lines


def _threads_cell(requested: int, effective: int | None) -> str:
    if effective is None:
        return f"{requested} (requested; the runtime cannot report)"
    return f"{requested} → {effective}"


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
        ["images", f"{env.image_set}; {env.eval_photos} evaluation photos"
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
    widths = [(r.speedup_ci[1] - r.speedup_ci[0]) / 2 / r.speedup_vs_eager * 100 for r in measured if r.speedup_ci]
    width = (f" The speed-up intervals' half-widths run from {min(widths):.1f} to {max(widths):.1f} % "
             f"(median {sorted(widths)[len(widths) // 2]:.1f} %)." if widths else "")
    return (f"Timing: {sessions} sessions; in each, every variant runs in a fresh process with threads set "
            f"explicitly, warm-up excluded, timed in interleaved rounds in rotating order ({rounds} rounds in all, "
            f"{min(r.runs for r in measured)}+ timed calls per variant). p50 is the geometric mean of the "
            f"per-session medians and speed-up the geometric mean of the per-session speed-ups (each the "
            f"median of that session's per-round ratios to eager FP32); in brackets is the 95 % rerun "
            f"interval: where a rerun of this bench puts the figure 95 % of the time (Student-t over sessions on "
            f"the log scale, widened by sqrt(2) for the rerun's own noise), because the speed of a process is "
            f"itself a random draw that rounds inside one process cannot average out.{width} p90/p99 pool every call. "
            f"Per-round medians vary with a CV of {min(round_cvs) * 100:.1f}–{max(round_cvs) * 100:.1f} % "
            f"across variants."
            + (f" Preprocessing (decode, resize, crop, normalise) takes {measured[0].preprocess_ms:.1f} ms per "
               "photo for every variant and is not included." if measured[0].preprocess_ms is not None else
               " The photos arrive preprocessed (device mode): no preprocessing is timed."))


def harness_lines(results: list[Result]) -> list[str]:
    """Our p50 against the runtime's own benchmark program on the same artifact and threads."""
    lines = []
    for r in results:
        native = r.native_benchmark
        if r.measured and native and native.get("median_ms"):
            lines.append(f"- `{md(r.variant)}`: {md(native['tool'])} (the runtime's own benchmark program, run "
                         f"on the same file and threads between our sessions, {native['sessions']} × "
                         f"{native['calls_per_session']} calls) median {native['median_ms']:.2f} ms; our p50 "
                         f"{r.p50_ms:.2f} ms: {r.p50_ms - native['median_ms']:+.2f} ms per call "
                         f"({(r.p50_ms / native['median_ms'] - 1) * 100:+.1f} %) for our harness and the Python "
                         f"Interpreter API it drives (litert-benchmark drives LiteRT's CompiledModel API).")
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
              _num(r.agreement_pct, "{:.1f}") if r.measured else "—",
              "" if r.measured else md(r.status_reason)] for r in rows]
    install = rows[0].env.device_install_mb
    return [f"Same answers on this device as on {md(controller)}? Each artifact was built and checked on "
            f"{md(controller)}, run here on {rows[0].env.eval_photos} evaluation photos, and its logits "
            "compared with the same artifact's on that machine (its build check, at 1 thread): this is where "
            "ARM's and x86's kernels differ."
            + (f" The runtimes' virtual environment on the device takes {install:.0f} MB." if install else ""), "",
            tabulate(table, headers=["variant", "top-1 agreement with the same artifact there %",
                                     "max abs Δlogit", "agreement with eager FP32 there %", "note"],
                     tablefmt="github", disable_numparse=True), ""]


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
            out.append(f"  - `{variant.id}`:{flag} {variant.tuning}")
    out.append("- Deprecated paths (torch 2.14), still measured because apps ship them today:")
    for text in (TORCHSCRIPT_DEPRECATED, LITE_DEPRECATED, AO_DEPRECATED):
        out.append(f"  - {text}")
    out.append("  - The modern path is torch.export → ExecuTorch (`executorch-*` rows), with PT2E for INT8.")
    out.append("- Status, decided on 95 % intervals (Wilson for agreement, Newcombe's paired interval for the "
               "top-1 difference from FP32): FAILED = top-1 agreement with FP32 surely below 80 % or top-1 "
               "surely more than 5 points below FP32, or a build error (latency withheld); DEGRADED = surely "
               "below 90 % agreement or more than 2 points down; INCONCLUSIVE = the photos cannot tell ok from "
               "DEGRADED (timed and shown; the reason estimates how many photos would); ok = at least 90 % "
               "agreement and at most 2 points down, shown by the intervals; skipped = the runtime is not "
               "installed or not supported on this machine.")
    out.append("- Top-1, top-5, agreement and the gate share one rule: classes are ranked by logit, ties to the "
               "lower class index (what argmax does); `tied top-1 rows` counts the photos whose maximum "
               "logit is shared, where that rule decides.")
    return out


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
             "machine's own eager FP32 with its 95 % rerun interval (the same figures as in the machine's "
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
                  *harness_lines(group), "",
                  *cross_isa_lines(group),
                  "<details><summary>Details: runtime, size vs FP32, p90/p99 and the rest of the latency "
                  "distribution, load and first inference, memory, CPU, threads, energy, top-5, numerical "
                  "distance, status reasons</summary>",
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
    text = render(results, figures, dropped) + ("\n" + "\n".join(sections) + "\n" if sections else "")
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    return out, [f"{r.variant}@{r.threads}t" for r in results if r.status == "FAILED"]
