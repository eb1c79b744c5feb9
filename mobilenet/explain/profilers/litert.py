"""LiteRT: no per-operator profiler is reachable from the installed packages.

Checked in ai-edge-litert (the version is in the message): the Python Interpreter takes no
profiler and exposes none (its experimental_force_delegate_node_profiling only matters to
a C++ profiler attached to the interpreter); the `litert-benchmark` tool it installs times
whole-model calls only; the C++ `benchmark_model` whose --enable_op_profiling prints
per-operator times is not in the wheel (litert-cli downloads it at run time, which a
pip-only install cannot). And with XNNPACK applied by default, the whole graph is one
delegate node, so even TFLite's interpreter profiler would see one operator.
"""
from __future__ import annotations

from importlib import metadata

from mobilenet.explain.profilers import ProfilerUnavailable

PROFILER_NAME = "none reachable from Python"
KERNELS_NOTE = ("LiteRT does not say which kernels ran: its XNNPACK delegate is one node of the graph, and no "
                "operator profiler is reachable from Python")


def profile(runner, variant, artifact, image, calls: int, work_dir):
    version = metadata.version("ai-edge-litert")
    raise ProfilerUnavailable(
        f"ai-edge-litert {version} exposes no per-operator profiler to Python (the Interpreter takes "
        "none; litert-benchmark times whole calls; the C++ benchmark_model with "
        "--enable_op_profiling is not in the wheel), and XNNPACK runs the whole graph as one "
        "delegate node")
