"""Statistics made from timed calls and sessions.

Sessions are the unit of repetition: a session is one fresh process per variant, and the
speed of a process is itself a random draw (one process of the same model can be 1.5x
faster than another). Rounds inside a session share that draw, so they are not independent
samples of it; intervals are therefore computed over sessions, not over calls or rounds.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass

import numpy as np


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


# Two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom; 1.96 beyond.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(dof: int) -> float:
    return _T975[dof - 1] if dof <= len(_T975) else 1.96


@dataclass(frozen=True)
class Interval:
    """Where a rerun of the same bench would put this figure, 95 % of the time.

    A rerun draws new processes, so its estimate misses ours by the noise of both runs: the
    half-width is Student's t (n-1 degrees of freedom) times the session spread times
    sqrt(1/n + 1/n), a prediction interval for the next run's mean, not a confidence interval
    for this run's (which is sqrt(2) narrower and misses about one rerun in six). That is the
    question a user asks of a benchmark ("will the ranking hold when I run it again?"), and
    the one `compare` asks of two runs. Computed on the log scale around the geometric mean:
    ratios and times are multiplicative, so a 1.2x faster and a 1.2x slower session are
    equally far from the centre. With few sessions the t quantile (12.7 for two, 2.45 for
    seven) is honest about how little is known. One session has no interval (low = high = None).
    """
    estimate: float
    low: float | None
    high: float | None
    sessions: int

    @property
    def half_width_pct(self) -> float | None:
        if self.low is None:
            return None
        return (self.high - self.low) / 2 / self.estimate * 100

    def clears_below(self, other: Interval) -> bool:
        """True when this interval lies wholly below the other (both must be known)."""
        return self.high is not None and other.low is not None and self.high < other.low


def session_interval(values) -> Interval:
    logs = [math.log(v) for v in values]
    if not logs:
        raise ValueError("no sessions")
    centre = statistics.fmean(logs)
    if len(logs) < 2:
        return Interval(math.exp(centre), None, None, len(logs))
    n = len(logs)
    half = t975(n - 1) * statistics.stdev(logs) * math.sqrt(1 / n + 1 / n)
    return Interval(math.exp(centre), math.exp(centre - half), math.exp(centre + half), len(logs))
