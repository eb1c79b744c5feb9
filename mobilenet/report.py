"""build/report.md and its charts (build/plots/), rendered from result JSON files alone
(nothing is rerun). Result folders of several machines merge into one report."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from tabulate import tabulate

from mobilenet import plots
from mobilenet.fsutil import atomic_path
from mobilenet.results import Result, group_by, load_results
from mobilenet.variants import (AO_DEPRECATED, LITE_DEPRECATED, REFERENCE_ID, TORCHSCRIPT_DEPRECATED, VARIANTS,
                                display_order)

# ../shared/weights/mobilenet_v2_float_from_qnnpack.pth: FP32 weights dequantized from an INT8 model.
INT8_GRID_WEIGHTS_SHA256 = "b25476ee0cc47985ada7a7e8aa5deb05e9a3b3751236837a6c6fb8536feae92c"


def _num(value, fmt: str = "{:.2f}", missing: str = "—") -> str:
    return missing if value is None else fmt.format(value)


def _status(r: Result) -> str:
    if r.status == "FAILED":
        return f"**FAILED**: {r.status_reason}"
    if r.status == "DEGRADED":
        return f"DEGRADED: {r.status_reason}"
    if r.status == "skipped":
        return f"skipped: {r.status_reason}"
    return "ok"


def main_table(results: list[Result]) -> str:
    reference = next((r for r in results if r.variant == REFERENCE_ID and r.size_mb), None)
    rows = []
    for r in sorted(results, key=lambda r: display_order(r.variant)):
        shown = r.measured  # a FAILED variant's latency is not a result
        version = _runtime_version(r)
        rows.append([
            f"`{r.variant}`", f"{r.runtime} {version}".strip(),
            _num(r.size_mb) if r.size_mb else "—",
            _num(r.size_mb / reference.size_mb, "{:.2f}×") if reference and r.size_mb else "—",
            _num(r.p50_ms if shown else None), _num(r.p90_ms if shown else None),
            _num(r.speedup_vs_eager if shown else None, "{:.2f}×"),
            _num(r.load_ms, "{:.0f}"), _num(r.peak_rss_mb, "{:.0f}"),
            _num(r.cpu_util_pct, "{:.0f}%"), _energy(r),
            _num(r.top1_pct, "{:.1f}"), _num(r.top5_pct, "{:.1f}"), _num(r.agreement_pct, "{:.1f}"),
            _status(r)])
    headers = ["variant", "runtime", "size MB", "vs FP32", "p50 ms", "p90 ms", "speed-up",
               "load ms", "peak RSS MB", "CPU", "energy mJ/inf", "top-1 %", "top-5 %", "agree %", "status"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def _energy(r: Result) -> str:
    if r.energy_mj_per_inference is not None:
        return f"{r.energy_mj_per_inference:.1f}"
    return "n/a (no RAPL)" if r.measured else "—"


def _runtime_version(r: Result) -> str:
    versions = r.env.runtime_versions or {}
    for key in ("onnxruntime", "ai-edge-litert", "executorch", "torch"):
        if key in versions:
            return versions[key]
    return ""


def summary_lines(results: list[Result]) -> list[str]:
    measured = [r for r in results if r.measured and r.p50_ms]
    if not measured:
        return ["No variant produced a measurement."]
    fastest = min(measured, key=lambda r: r.p50_ms)
    smallest = min(measured, key=lambda r: r.size_mb)
    lines = [f"- Fastest: `{fastest.variant}`, p50 {fastest.p50_ms:.2f} ms "
             f"({fastest.speedup_vs_eager:.2f}× eager FP32).",
             f"- Smallest file: `{smallest.variant}`, {smallest.size_mb:.2f} MB."]
    scored = [r for r in measured if r.top1_pct is not None]
    if scored:
        best = max(scored, key=lambda r: r.top1_pct / r.size_mb)
        lines.append(f"- Best accuracy per MB: `{best.variant}`, {best.top1_pct:.1f} % top-1 in "
                     f"{best.size_mb:.2f} MB ({best.top1_pct / best.size_mb:.1f} %/MB).")
    flagged = [r for r in results if r.status in ("FAILED", "DEGRADED")]
    for r in flagged:
        lines.append(f"- `{r.variant}` is {r.status}: {r.status_reason}.")
    return lines


def environment_block(results: list[Result]) -> str:
    env = results[0].env
    threads = sorted({(r.threads, r.env.threads_effective) for r in results if r.env.threads_effective})
    versions = {}
    for r in results:
        versions.update(r.env.runtime_versions or {})
    rows = [
        ["machine", env.machine_id], ["CPU", f"{env.cpu_model}, {env.logical_cores} logical cores"],
        ["OS", env.os], ["Python", env.python], ["torch / torchvision", f"{env.torch} / {env.torchvision}"],
        ["runtimes", ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or "—"],
        ["threads (requested → effective)", ", ".join(f"{a} → {b}" for a, b in threads) or "—"],
        ["weights", f"{env.weights_source} (sha256 {env.weights_sha256[:16]}…)"],
        ["images", f"{env.image_set}; {env.eval_photos} evaluation photos"
                   + ("" if env.labelled else " (unlabelled: agreement only)")],
        ["energy", env.energy_source],
    ]
    return tabulate(rows, headers=["", ""], tablefmt="github")


def timing_note(results: list[Result]) -> str:
    measured = [r for r in results if r.measured and r.rounds]
    if not measured:
        return ""
    rounds = measured[0].rounds
    round_cvs = [r.round_cv for r in measured if r.round_cv is not None]
    return (f"Timing: every variant loaded in its own process with threads set explicitly; "
            f"{rounds} interleaved rounds in rotating order, {measured[0].runs // max(1, rounds)} "
            f"calls per burst, warm-up excluded, {min(r.runs for r in measured)}+ timed calls each. "
            f"Percentiles pool all rounds; speed-up is the median of per-round ratios to eager FP32. "
            f"Noise: per-round medians vary with a CV of {min(round_cvs) * 100:.1f}–{max(round_cvs) * 100:.1f} %"
            f" across variants; per-call CV {min(r.cv for r in measured) * 100:.1f}–"
            f"{max(r.cv for r in measured) * 100:.1f} %. Preprocessing (decode, resize, crop, normalise) "
            f"takes {measured[0].preprocess_ms:.1f} ms per photo for every variant and is not included.")


def detail_table(results: list[Result]) -> str:
    """The rest of each variant's numbers: distribution, first call, CPU, numerical distance."""
    rows = []
    for r in sorted(results, key=lambda r: display_order(r.variant)):
        if not r.measured:
            continue
        rows.append([f"`{r.variant}`", _num(r.mean_ms), _num(r.p99_ms), _num(r.std_ms),
                     _num(r.cv * 100, "{:.1f}"), _num(r.round_cv * 100 if r.round_cv is not None else None, "{:.1f}"),
                     _num(r.first_inference_ms, "{:.1f}"), str(r.runs), _num(r.cpu_time_s),
                     _num(r.max_abs_dlogit, "{:.2g}")])
    headers = ["variant", "mean ms", "p99 ms", "std ms", "CV %", "round CV %", "first inference ms",
               "timed runs", "CPU s", "max abs Δlogit"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


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
        out.append(f"- Weights: {env.weights_source}.")
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
            flag = f" **{statuses[variant.id]}** —" if statuses[variant.id] in ("DEGRADED", "FAILED") else ""
            out.append(f"  - `{variant.id}`:{flag} {variant.tuning}")
    out.append("- Deprecated paths (torch 2.14), still measured because apps ship them today:")
    for text in (TORCHSCRIPT_DEPRECATED, LITE_DEPRECATED, AO_DEPRECATED):
        out.append(f"  - {text}")
    out.append("  - The modern path is torch.export → ExecuTorch (`executorch-*` rows), with PT2E for INT8.")
    out.append("- Status: FAILED = top-1 agreement with FP32 below 80 % or top-1 more than 5 points below "
               "FP32 (latency withheld); DEGRADED = below 90 % agreement or more than 2 points down.")
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
        rows.append([f"`{variant}`", *cells, *scaling])
    headers = (["variant"] + [f"p50 ms @ {t}t" for t in counts]
               + [f"scaling × {t}t vs {counts[0]}t" for t in counts[1:]])
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def _cross_cell(r: Result | None) -> str:
    if r is None:
        return "—"
    if not r.measured:
        return r.status
    return f"{r.p50_ms:.2f} ms ({_num(r.speedup_vs_eager, '{:.2f}×')})"


def cross_machine_table(results: list[Result], threads: int) -> str:
    """Rows = variants, columns = machines; each speed-up is against that machine's own eager FP32."""
    machines = list(dict.fromkeys(r.env.machine_id for r in results))
    cell = {(r.env.machine_id, r.variant): r for r in results if r.threads == threads}
    variants = sorted({v for _, v in cell}, key=lambda v: display_order(v))
    rows = [[f"`{v}`", *(_cross_cell(cell.get((m, v))) for m in machines)] for v in variants]
    return tabulate(rows, headers=["variant", *machines], tablefmt="github", disable_numparse=True)


def cross_machine_section(results: list[Result]) -> list[str]:
    parts = ["## Across machines", "",
             "p50 latency per variant on each machine, and in brackets its speed-up against that "
             "machine's own eager FP32 (the same figure as in the machine's table below: the median "
             "of per-round ratios, measured in the same run).", ""]
    for threads in sorted({r.threads for r in results}):
        parts += [f"### {plots.threads_label(threads)}", "", cross_machine_table(results, threads), ""]
    return parts


def _image(figures: dict, key: tuple, alt: str) -> list[str]:
    return [f"![{alt}]({figures[key]})", ""] if key in figures else []


def render_machine(results: list[Result], figures: dict | None = None) -> str:
    figures = figures or {}
    machine = results[0].env.machine_id
    parts = [environment_block(results), ""]
    by_threads = group_by(results, lambda r: r.threads)
    for threads in sorted(by_threads):
        group, label = by_threads[threads], plots.threads_label(threads)
        parts += [f"### {label}", "", main_table(group), "", *summary_lines(group), "", timing_note(group), "",
                  "<details><summary>Latency distribution, first inference, CPU time, numerical distance</summary>",
                  "", detail_table(group), "", "</details>", "",
                  *_image(figures, (machine, "latency", threads), f"p50 latency per variant at {label}"),
                  *_image(figures, (machine, "tradeoff", threads), f"size vs latency at {label}")]
    if len(by_threads) > 1:
        parts += ["### Thread scaling", "",
                  "p50 at each thread count; scaling × is how many times faster than at the lowest count.", "",
                  scaling_table(results), "", *_image(figures, (machine, "scaling", None), "thread scaling")]
    return "\n".join(parts)


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
             f" ({len(by_machine)} machine{'s' if len(by_machine) > 1 else ''}).", ""]
    if dropped:
        parts += [f"Ignored {len(dropped)} result(s) already given by an earlier folder (same machine, "
                  f"variant and threads): " + ", ".join(f"`{r.variant}@{r.threads}t`" for r in dropped), ""]
    if len(by_machine) > 1:
        parts += cross_machine_section(results)
    for machine, group in by_machine.items():
        parts += [f"## {machine}", "", render_machine(group, figures), "## Notes", "", *notes(group), ""]
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


def write(results_dirs: list[Path], out: Path) -> Path:
    """report.md at `out`, its charts under plots/ beside it, linked by relative paths."""
    out = Path(out)
    results, dropped = unique([r for folder in results_dirs for r in load_results(folder)])
    figures = {key: path.relative_to(out.parent).as_posix()
               for key, path in plots.write_all(results, out.parent / "plots").items()}
    text = render(results, figures, dropped)
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    return out
