"""torch.profiler for eager modules, TorchScript and the lite interpreter.

The three run through the same dispatcher, so one profiler sees all of them. Each call is
wrapped in its own record_function range; an operator counts once, at the outermost level
(aten::conv2d, not also the aten::mkldnn_convolution it calls), with its inclusive time.
"""
from __future__ import annotations

import time

import torch

PROFILER_NAME = f"torch.profiler (torch {torch.__version__})"
CALL_RANGE = "explain::call"
_INTERPRETERS = {"torch_eager": "eager PyTorch", "torchscript": "the TorchScript interpreter",
                 "lite_interpreter": "the lite interpreter"}


def _is_operator(name: str) -> bool:
    return "::" in name and name != CALL_RANGE


def split_calls(events) -> list[list]:
    """Top-level operators of each profiled call, in start order: [(name, ms)]."""
    calls = {}
    for event in events:
        if not _is_operator(event.name):
            continue
        parent, call = event.cpu_parent, None
        while parent is not None:
            if parent.name == CALL_RANGE:
                call = parent
                break
            if _is_operator(parent.name):
                break  # nested inside another operator: counted there
            parent = parent.cpu_parent
        if call is not None:
            calls.setdefault(call.id, []).append(event)
    out = []
    for _, ops in sorted(calls.items(), key=lambda kv: kv[1][0].time_range.start):
        ops.sort(key=lambda e: e.time_range.start)
        out.append([(e.name, e.cpu_time_total / 1000.0) for e in ops])
    return out


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
                   visibility=f"every aten/quantized operator {_INTERPRETERS[variant.runtime]} dispatches",
                   calls=split_calls(prof.events()), profiled_ms=wall)
