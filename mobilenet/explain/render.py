"""The report's "Why these numbers" section, rendered from <build>/explain/*.json alone."""
from __future__ import annotations

import statistics
from pathlib import Path

from tabulate import tabulate

from mobilenet.explain import kinds, pipeline, sqnr
from mobilenet.explain.records import (
    OK,
    ExplainSummary,
    OperatorProfile,
    QuantizationError,
    load,
    load_all,
)


def _ms(value) -> str:
    return "—" if not value else f"{value:.2f}"


def profile_table(profiles: list) -> str:
    headers = ["variant", *kinds.KINDS, "sum ms", "unprofiled p50 ms", "sum / p50", "profiler cost", "profiler"]
    rows = []
    for p in profiles:
        if p.status != OK:
            rows.append([f"`{p.variant}`", *["—"] * len(kinds.KINDS), "—", _ms(p.unprofiled_p50_ms), "—", "—",
                         "not available (below)"])
            continue
        overhead = p.profiler_overhead_pct
        rows.append([f"`{p.variant}`", *(_ms(p.kind_ms.get(k)) for k in kinds.KINDS), _ms(p.kind_sum_ms),
                     _ms(p.unprofiled_p50_ms), f"{p.coverage:.2f}" if p.coverage else "—",
                     f"{overhead:+.0f} %" if overhead is not None else "—", p.profiler])
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def profile_notes(profiles: list) -> list[str]:
    lines = [f"- `{p.variant}`: not available: {p.reason}." for p in profiles if p.status != OK]
    for p in profiles:
        note = p.coverage_note() if p.status == OK else ""
        if note:
            lines.append(f"- `{p.variant}`: the kinds sum to {p.coverage:.2f}× the unprofiled p50 because {note}.")
    seen = {}
    for p in profiles:
        if p.status == OK and p.visibility:
            seen.setdefault(p.profiler, (p.visibility, []))[1].append(p.variant)
    for profiler, (visibility, variants) in seen.items():
        lines.append(f"- {profiler} sees {visibility} ({', '.join(f'`{v}`' for v in variants)}).")
    return lines


def kernel_lines(profiles: list) -> list[str]:
    """One line per profiled variant: the kernels each kind ran, what named them, what is untold."""
    lines = []
    for p in profiles:
        if p.status != OK and not p.kernels_note:
            continue
        kinds_text = "; ".join(
            f"{kind}: " + ", ".join(f"`{name}` ×{count}" for name, count in names.items())
            + (f" ({', '.join(p.kernel_isa[kind])})" if p.kernel_isa.get(kind) else "")
            + (" (inferred)" if kind in p.kernels_inferred else "")
            for kind, names in ((kind, p.kernels[kind]) for kind in kinds.KINDS if kind in p.kernels))
        source = f" from {p.kernels_source}" if p.kernels and p.kernels_source else ""
        note = f" {p.kernels_note}." if p.kernels_note else ""
        lines.append(f"- `{p.variant}`{source}: {kinds_text or 'no kernel named'}.{note}")
    return lines


def sqnr_table(errors: list) -> str:
    headers = ["variant", "layers", "median dB", "output layer dB", f"{sqnr.WORST_COUNT} worst layers (dB)", "tool"]
    rows = []
    for e in errors:
        if e.status != OK or not e.layers:
            rows.append([f"`{e.variant}`", "—", "—", "—", "not available (below)", e.tool or "—"])
            continue
        values = [layer["sqnr_db"] for layer in e.layers]
        worst = "; ".join(f"{w['name']} ({w['kind']}) {_db(w)}" for w in sqnr.worst(e.layers))
        rows.append([f"`{e.variant}`", str(len(values)), f"{statistics.median(values):.1f}", _db(e.layers[-1]),
                     worst, e.tool])
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def _db(layer: dict) -> str:
    db = layer["sqnr_db"]
    return f"≥{db:.0f} (capped)" if layer["capped"] and db > 0 else f"{db:.1f}"


def _image(build_dir: Path, path: Path, alt: str) -> list[str]:
    return [f"![{alt}]({path.relative_to(build_dir).as_posix()})", ""] if path.exists() else []


def render_section(build_dir: Path) -> list[str]:
    """Markdown lines for report.md (which lives in build_dir); [] when explain has not run."""
    build_dir = Path(build_dir)
    summary_file = pipeline.summary_path(build_dir)
    summary = load(summary_file, ExplainSummary) if summary_file.exists() else None
    if summary is None:
        return []
    profiles = pipeline.ordered(load_all(pipeline.explain_dir(build_dir) / "profile", OperatorProfile))
    errors = pipeline.ordered(load_all(pipeline.explain_dir(build_dir) / "sqnr", QuantizationError))
    verdicts_file = pipeline.verdicts_path(build_dir)
    verdicts = load_json_list(verdicts_file)
    charts = pipeline.chart_paths(build_dir)
    flags = ", ".join(summary.cpu_flags) or "none"
    lines = ["## Why these numbers", "",
             f"Measured by `invoke explain` on {summary.cpu_model} (INT8-relevant flags present: {flags}; "
             f"absent: {', '.join(summary.cpu_flags_absent) or 'none'}), each variant in its own fresh process, "
             "1 thread, separately from the timed runs.", "",
             "### Where the time goes", "",
             f"ms per call by operator kind, the median of {summary.profile_calls} profiled calls after warm-up, "
             "from each runtime's own profiler. The unprofiled p50 comes from the same process, with the "
             "profiler off, half before and half after the profiled calls; the profiler's cost is the "
             "profiled p50 against it. Convolutions are told apart by their position in MobileNet-V2's "
             "52 convolutions.", "",
             profile_table(profiles), "", *profile_notes(profiles), "",
             *_image(build_dir, charts["kinds"], "time by operator kind per variant"),
             "### Which kernels ran", "",
             "Per operator kind, the kernels of one call as each runtime names them, and the instruction sets "
             "those names show; \"inferred\" marks names taken from an engine's source where the engine reports "
             "none.", "",
             *kernel_lines(profiles), "",
             "### Quantization error by layer", "",
             f"SQNR of each layer's INT8 output against the FP32 model's output for the same layer, over "
             f"{summary.sqnr_photos} evaluation photos; identical outputs are shown as the {summary.sqnr_cap_db:g} dB "
             "cap. Errors accumulate: a layer's figure includes everything before it.", "",
             sqnr_table(errors), ""]
    lines += [f"- `{e.variant}`: compared with {e.reference}; {e.fidelity}." if e.status == OK
              else f"- `{e.variant}`: not available: {e.reason}." for e in errors]
    lines += ["", *_image(build_dir, charts["sqnr"], "SQNR by layer depth"), "### Verdicts", ""]
    for v in verdicts:
        against = f" (against `{v['baseline']}`)" if v["baseline"] else ""
        lines.append(f"- **`{v['variant']}`**{against}: {v['text']}")
    total = sum(summary.stage_seconds.values())
    stages = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in summary.stage_seconds.items())
    cpu = sum(summary.stage_cpu_seconds.values())
    lines += ["", f"The last `invoke explain` took {total:.0f} s of wall time ({stages}) and {cpu:.0f} CPU seconds "
                  f"in its worker processes; {len(summary.redone)} jobs redone, the rest up to date.", ""]
    return lines


def load_json_list(path: Path) -> list:
    import json
    return json.loads(Path(path).read_text()) if Path(path).exists() else []
