"""Explain the numbers: where each variant's time goes, which layers lose accuracy in INT8,
and why INT8 wins or loses on this CPU.

`run(settings, force=False)` profiles every variant with its runtime's own profiler,
compares every INT8 variant's layers with FP32, and writes verdicts, as JSON under
<build>/explain/ and charts under <build>/plots/. `render_section(build_dir)` turns those
files alone into the report's markdown section.
"""
from __future__ import annotations

from pathlib import Path


def run(settings, force: bool = False):
    from mobilenet.explain.pipeline import run as run_explain
    return run_explain(settings, force=force)


def render_section(build_dir: Path) -> list[str]:
    from mobilenet.explain.render import render_section as render
    return render(build_dir)
