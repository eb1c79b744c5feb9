"""Operator profiles of one variant, in the process that calls `profile_variant`.

Each runtime's record (mobilenet.registry, Runtime.profiler) names its module here, exposing
`profile(runner, variant, artifact, image, calls, work_dir) -> Capture`: it runs `calls`
profiled inferences with the runtime's own profiler and returns the operators of each call in
execution order. Timing with the profiler off uses the bench's own runner
(mobilenet.measure.runners), so the unprofiled p50 is the benchmarked code path.
"""
from __future__ import annotations

import importlib
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mobilenet.explain import kernels, kinds
from mobilenet.explain.records import NOT_AVAILABLE, OK, OperatorProfile, OpTime
from mobilenet.measure.timing import time_calls
from mobilenet.registry import runtime_of

WARMUP_CALLS = 3


class ProfilerUnavailable(RuntimeError):
    """The runtime cannot report per-operator times here; the message says why."""


@dataclass
class Capture:
    """What a runtime's profiler saw: per call, [(operator name, ms)] in execution order."""
    profiler: str
    visibility: str
    calls: list = field(default_factory=list)
    profiled_ms: list = field(default_factory=list)  # wall time of each profiled call
    # The kernel the runtime names for each operator of the last call (aligned with calls[-1];
    # "" where it names none), or kernels already counted by kind where the runtime's record
    # has its own operator descriptors (oneDNN's verbose lines).
    kernel_names: list = field(default_factory=list)
    kernels: dict = field(default_factory=dict)
    kernels_source: str = ""
    kernels_inferred: list = field(default_factory=list)
    kernels_note: str = ""
    library_kernel_isas: list = field(default_factory=list)
    library: str = ""


def aggregate(calls: list) -> tuple[dict, list]:
    """ms per call by kind and by operator name (largest first): the median over the profiled
    calls, so a call that a busy machine slowed does not move the figures."""
    per_call_kind, per_call_name = [], []
    for ops in calls:
        by_kind, by_name = defaultdict(float), defaultdict(lambda: [0, 0.0])
        for (name, ms), kind in zip(ops, kinds.classify_call(name for name, _ in ops)):
            by_kind[kind] += ms
            by_name[(name, kind)][0] += 1
            by_name[(name, kind)][1] += ms
        per_call_kind.append(by_kind)
        per_call_name.append(by_name)
    kind_ms = {k: statistics.median(call.get(k, 0.0) for call in per_call_kind) for k in kinds.KINDS
               if any(call.get(k) for call in per_call_kind)}
    ops = []
    for name, kind in {key for call in per_call_name for key in call}:
        counts = [call[(name, kind)][0] if (name, kind) in call else 0 for call in per_call_name]
        times = [call[(name, kind)][1] if (name, kind) in call else 0.0 for call in per_call_name]
        ops.append(OpTime(name, kind, statistics.median_low(counts), statistics.median(times)))
    ops.sort(key=lambda o: -o.ms_per_call)
    return kind_ms, [asdict(o) for o in ops]


def profile_variant(variant, artifact: Path, image: np.ndarray, calls: int, work_dir: Path) -> OperatorProfile:
    """Unprofiled and profiled latency in this process, and the operator breakdown.

    Unprofiled calls run before and after the profiled ones, so a drift of the machine's speed
    during the run affects both sides alike.
    """
    from mobilenet.measure.runners import make_runner
    profiler = runtime_of(variant).profiler
    if profiler is None:
        raise ProfilerUnavailable(f"no operator profiler is wired up for the {variant.runtime} runtime")
    base = OperatorProfile(variant=variant.id, runtime=variant.runtime, precision=variant.precision,
                           status=NOT_AVAILABLE, reason="", profiler="", visibility="", threads=1)
    runner = make_runner(variant.runtime, 1, variant.runner)
    runner.load(artifact)
    time_calls(runner.run, image, WARMUP_CALLS)
    half = max(1, calls // 2)
    unprofiled = time_calls(runner.run, image, half)
    module = importlib.import_module(f"mobilenet.explain.profilers.{profiler}")
    try:
        capture = module.profile(runner, variant, Path(artifact), image, calls, Path(work_dir))
    except ProfilerUnavailable as exc:
        unprofiled += time_calls(runner.run, image, half)
        base.reason = str(exc)
        base.profiler = getattr(module, "PROFILER_NAME", "")
        base.kernels_note = getattr(module, "KERNELS_NOTE", "")
        base.unprofiled_p50_ms = statistics.median(unprofiled)
        return base
    unprofiled += time_calls(runner.run, image, half)
    kind_ms, ops = aggregate(capture.calls)
    base.status, base.profiler, base.visibility = OK, capture.profiler, capture.visibility
    base.profiled_calls = len(capture.calls)
    base.unprofiled_p50_ms = statistics.median(unprofiled)
    base.profiled_p50_ms = statistics.median(capture.profiled_ms) if capture.profiled_ms else None
    base.kind_ms, base.ops = kind_ms, ops
    record_kernels(base, capture)
    return base


def record_kernels(profile: OperatorProfile, capture: Capture) -> None:
    """The capture's kernels, by kind, into the profile, with the instruction sets their names show."""
    found = dict(capture.kernels)
    if capture.kernel_names and capture.calls:
        for kind, names in kernels.by_kind([name for name, _ in capture.calls[-1]], capture.kernel_names).items():
            found.setdefault(kind, names)
    profile.kernels = {kind: found[kind] for kind in kinds.KINDS if kind in found}
    profile.kernels_source = capture.kernels_source if profile.kernels else ""
    profile.kernels_inferred = [kind for kind in kinds.KINDS if kind in capture.kernels_inferred and kind in found]
    profile.kernels_note = capture.kernels_note
    profile.library_kernel_isas, profile.library = list(capture.library_kernel_isas), capture.library
    profile.kernel_isa = {kind: kernels.isa_shown(names) for kind, names in profile.kernels.items()
                          if kernels.isa_shown(names)}


def not_available(variant, reason: str, profiler: str = "") -> OperatorProfile:
    """The row of a variant that could not be profiled at all (no artifact, runtime missing)."""
    return OperatorProfile(variant=variant.id, runtime=variant.runtime, precision=variant.precision,
                           status=NOT_AVAILABLE, reason=reason, profiler=profiler, visibility="", threads=1)
