"""ONNX Runtime's own session profiler (SessionOptions.enable_profiling, a JSON trace).

The profiled session is made from the bench runner's own session options (threads,
sequential execution, full graph optimisation) with profiling switched on, so it runs the
same optimised graph: for INT8 that is QLinearConv in NHWC with Transpose at the edges,
for FP32 NCHWc convolutions with ReorderInput/ReorderOutput around them.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import onnxruntime

PROFILER_NAME = f"ONNX Runtime enable_profiling (onnxruntime {onnxruntime.__version__})"


KERNELS_SOURCE = "ONNX Runtime's profile (args.op_name and args.provider of each kernel event)"
KERNELS_NOTE = ("ONNX Runtime's profile names each kernel's operator and execution provider only, not the MLAS "
                "routine it ran nor that routine's instruction set (MLAS picks one at run time and reports none)")


def _runs(trace: list) -> list[list]:
    """The kernel events of each model_run in the trace, in execution order."""
    runs = sorted((e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    kernels = sorted((e for e in trace if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")),
                     key=lambda e: e["ts"])
    return [[e for e in kernels if run["ts"] <= e["ts"] <= run["ts"] + run["dur"]] for run in runs]


def split_calls(trace: list) -> list[list]:
    """Kernel events of each model_run in the trace: [(op type, ms)] in execution order."""
    return [[(e["args"].get("op_name", e["name"]), e["dur"] / 1000.0) for e in run] for run in _runs(trace)]


def kernel_names(trace: list) -> list[str]:
    """'QLinearConv (CPUExecutionProvider)' for each kernel of the last model_run: all the
    profile says about which kernel ran."""
    runs = _runs(trace)
    if not runs:
        return []
    return [f"{e['args'].get('op_name', e['name'])} ({e['args']['provider']})" if e["args"].get("provider")
            else e["args"].get("op_name", e["name"]) for e in runs[-1]]


def profile(runner, variant, artifact: Path, image, calls: int, work_dir: Path):
    from mobilenet.explain.profilers import Capture
    options = runner.session.get_session_options()
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(work_dir) / f"ort-{variant.id}")
    session = onnxruntime.InferenceSession(str(artifact), sess_options=options,
                                           providers=runner.session.get_providers())
    feed = {session.get_inputs()[0].name: image}
    session.run(None, feed)  # the first run of a new session allocates; not profiled below
    wall = []
    for _ in range(calls):
        start = time.perf_counter()
        session.run(None, feed)
        wall.append((time.perf_counter() - start) * 1000)
    trace_path = Path(session.end_profiling())
    trace = json.loads(trace_path.read_text())
    trace_path.unlink()
    return Capture(profiler=PROFILER_NAME,
                   visibility="every kernel of the optimised graph the CPU execution provider runs",
                   calls=split_calls(trace)[-calls:], profiled_ms=wall, kernel_names=kernel_names(trace),
                   kernels_source=KERNELS_SOURCE, kernels_note=KERNELS_NOTE)
