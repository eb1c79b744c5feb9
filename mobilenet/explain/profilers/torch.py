"""torch.profiler for eager modules, TorchScript, the lite interpreter and AOTInductor.

All run through the same dispatcher, so one profiler sees all of them (AOTInductor's own
fused C++ kernels excepted: it sees only the aten operators the compiled code calls). Each call is
wrapped in its own record_function range; an operator counts once, at the outermost level
(aten::conv2d, not also the aten::mkldnn_convolution it calls), with its inclusive time.
"""
from __future__ import annotations

import time

import torch

from mobilenet.registry import runtime_of

PROFILER_NAME = f"torch.profiler (torch {torch.__version__})"
CALL_RANGE = "explain::call"


def _is_operator(name: str) -> bool:
    return "::" in name and name != CALL_RANGE


def split_calls(events) -> list[list]:
    """Top-level operators of each profiled call, in start order: [(name, ms)].

    `events` are torch's raw Kineto events (name, start_ns, end_ns): building the profiler's
    own event tree costs seconds per thousand operators, and on one thread nesting is just
    interval containment: an operator that starts before the previous top-level one ends is
    its callee.
    """
    spans = sorted(((e.start_ns(), e.end_ns(), e.name(), e.start_thread_id()) for e in events),
                   key=lambda span: (span[0], -span[1]))
    calls, current, call_end, call_thread, operator_end = [], None, -1, None, -1
    for start, end, name, thread in spans:
        if name == CALL_RANGE:
            current, call_end, call_thread, operator_end = [], end, thread, -1
            calls.append(current)
        elif current is not None and _is_operator(name) and thread == call_thread \
                and start <= call_end and start >= operator_end:
            current.append((name, (end - start) / 1e6))
            operator_end = end
    return calls


def profile(runner, variant, artifact, image, calls: int, work_dir):
    from torch.profiler import ProfilerActivity, record_function
    from torch.profiler import profile as torch_profile

    from mobilenet.explain.profilers import Capture
    wall = []
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            start = time.perf_counter()
            with record_function(CALL_RANGE):
                runner.run(image)
            wall.append((time.perf_counter() - start) * 1000)
    return Capture(profiler=PROFILER_NAME,
                   visibility=runtime_of(variant).profiler_sees,
                   calls=split_calls(prof.profiler.kineto_results.events()), profiled_ms=wall)
