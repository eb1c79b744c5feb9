"""The one timing loop every variant runs, and the statistics made from it."""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np


def time_calls(run, image, count: int) -> list[float]:
    """Milliseconds of `count` consecutive calls of run(image); nothing else inside the clock."""
    samples = []
    clock = time.perf_counter
    for _ in range(count):
        start = clock()
        run(image)
        samples.append((clock() - start) * 1000.0)
    return samples


@dataclass(frozen=True)
class LatencyStats:
    runs: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    std_ms: float
    cv: float  # std / mean of the individual calls

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(samples_ms) -> LatencyStats:
    data = np.asarray(samples_ms, dtype=np.float64)
    if data.size == 0:
        raise ValueError("no timing samples")
    mean = float(data.mean())
    std = float(data.std(ddof=1)) if data.size > 1 else 0.0
    p50, p90, p99 = (float(v) for v in np.percentile(data, [50, 90, 99]))
    return LatencyStats(int(data.size), mean, p50, p90, p99, std, std / mean if mean else 0.0)


def cv(values) -> float:
    values = list(values)
    if len(values) < 2:
        return 0.0
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean if mean else 0.0


def median_round_ratio(reference_rounds: list[list[float]], variant_rounds: list[list[float]]) -> float:
    """Speed-up against the reference: the median over rounds of median(ref) / median(variant).

    Both ran in the same round, seconds apart, so each ratio sees the same machine state
    even when the machine drifts between rounds.
    """
    ratios = [statistics.median(ref) / statistics.median(var)
              for ref, var in zip(reference_rounds, variant_rounds) if ref and var]
    if not ratios:
        raise ValueError("no common rounds")
    return statistics.median(ratios)
