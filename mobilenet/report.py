"""build/report.md, rendered from build/results/*.json alone (nothing is rerun)."""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path

from tabulate import tabulate

from mobilenet.fsutil import atomic_path
from mobilenet.results import Result, load_results
from mobilenet.variants import AO_DEPRECATED, LITE_DEPRECATED, REFERENCE_ID, TORCHSCRIPT_DEPRECATED, VARIANTS

# ../shared/weights/mobilenet_v2_float_from_qnnpack.pth: FP32 weights dequantized from an INT8 model.
INT8_GRID_WEIGHTS_SHA256 = "b25476ee0cc47985ada7a7e8aa5deb05e9a3b3751236837a6c6fb8536feae92c"
VARIANT_ORDER = {v.id: i for i, v in enumerate(VARIANTS)}


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
    for r in sorted(results, key=lambda r: VARIANT_ORDER.get(r.variant, 99)):
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
            f"{max(r.cv for r in measured) * 100:.1f} %.")


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
    out.append("- Deprecated paths (torch 2.14), still measured because apps ship them today:")
    for text in (TORCHSCRIPT_DEPRECATED, LITE_DEPRECATED, AO_DEPRECATED):
        out.append(f"  - {text}")
    out.append("  - The modern path is torch.export → ExecuTorch (`executorch-*` rows), with PT2E for INT8.")
    out.append("- Status: FAILED = top-1 agreement with FP32 below 80 % or top-1 more than 5 points below "
               "FP32 (latency withheld); DEGRADED = below 90 % agreement or more than 2 points down.")
    return out


def render_machine(results: list[Result]) -> str:
    parts = [environment_block(results), ""]
    by_threads = defaultdict(list)
    for r in results:
        by_threads[r.threads].append(r)
    for threads in sorted(by_threads):
        group = by_threads[threads]
        parts += [f"### {threads} thread{'s' if threads > 1 else ''}", "", main_table(group), "",
                  *summary_lines(group), "", timing_note(group), ""]
    return "\n".join(parts)


def render(results: list[Result]) -> str:
    if not results:
        raise ValueError("no results to report: run `invoke bench` first")
    by_machine = defaultdict(list)
    for r in results:
        by_machine[r.env.machine_id].append(r)
    parts = ["# MobileNet-V2 deployment benchmark", "",
             f"Rendered {dt.datetime.now().strftime('%Y-%m-%d %H:%M')} from {len(results)} result files.", ""]
    for machine, group in by_machine.items():
        parts += [f"## {machine}", "", render_machine(group), "## Notes", "", *notes(group), ""]
    return "\n".join(parts)


def write(results_dirs: list[Path], out: Path) -> Path:
    results = [r for folder in results_dirs for r in load_results(folder)]
    text = render(results)
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    return out
