"""Statistics made from timed calls, sessions and runs.

Sessions are the unit of repetition inside a run: a session is one fresh process per variant,
and the speed of a process is itself a random draw (one process of the same model can be 1.5x
faster than another). Rounds inside a session share that draw, so they are not independent
samples of it; intervals are therefore computed over sessions, not over calls or rounds.

Runs are the level above: the whole machine is a few percent faster or slower from one run to
the next (its neighbours, its clock, where the hypervisor put it), for every variant at once,
and no number of sessions inside one run can see that. Two intervals answer two questions
(Kalibera & Jones, "Rigorous Benchmarking in Reasonable Time", ISMM 2013: one random effect per
level of repetition, each level's variance estimated from the level above it):

- within_run_interval: a confidence interval for this run's figure over its sessions. It is the
  right one for comparing variants measured in the same run ("A is faster than B", "fastest"),
  because the run-level term is shared by both and cancels.
- rerun_interval: where a rerun on this machine would land. It adds the run-level variance,
  estimated from this machine's earlier runs (run_level_variance), and the rerun's own session
  noise. Without such a history it is not known, and it is None, never the within-run one.
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


def pooled_reference_rounds(first: list[list[float]], peers: list[list[list[float]]]) -> list[list[float]]:
    """The reference's time per round from several of its processes: the first process's burst
    median of each round, scaled by the geometric mean over all processes of their speed
    relative to the first, as one-call bursts for median_round_ratio.

    Each process of the reference is its own speed draw (eager FP32's can be bimodal), and every
    speed-up of a session divides by the reference; the mean of k draws has 1/k of one draw's
    variance, so the speed-ups no longer inherit one process's luck. A peer's speed relative to
    the first process is the median, over the rounds both took part in (the peer's first ones),
    of the ratio of their burst medians: seconds apart, so the machine's drift cancels, and the
    first process, in every round, keeps pairing each variant's burst with the same round.
    """
    levels = [0.0]  # log speed relative to the first process; the first's own is 0
    for rounds in peers:
        ratios = [math.log(statistics.median(peer) / statistics.median(own))
                  for peer, own in zip(rounds, first) if peer and own]
        if ratios:
            levels.append(statistics.median(ratios))
    scale = math.exp(statistics.fmean(levels))
    return [[statistics.median(burst) * scale] if burst else [] for burst in first]


# Two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom, then 40, 60, 120 and infinity.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
_T975_TAIL = ((30, 2.042), (40, 2.021), (60, 2.000), (120, 1.980), (math.inf, 1.960))


def t975(dof: float) -> float:
    """Student's t 97.5 % quantile for any dof >= 1 (Satterthwaite's are not whole numbers):
    the table, with log t interpolated linearly in 1/dof (at most 3 % above the exact quantile
    between 1 and 2 dof, within 0.5 % beyond)."""
    dof = max(1.0, float(dof))
    if dof == int(dof) and dof <= len(_T975):
        return _T975[int(dof) - 1]
    if dof < len(_T975):
        low, high = math.floor(dof), math.ceil(dof)
        points = ((low, _T975[low - 1]), (high, _T975[high - 1]))
    else:
        points = next(pair for pair in zip(_T975_TAIL, _T975_TAIL[1:]) if dof <= pair[1][0])
    (d0, t0), (d1, t1) = points
    x, x0, x1 = 1 / dof, 1 / d0, 1 / d1 if math.isfinite(d1) else 0.0
    return math.exp(math.log(t0) + (math.log(t1) - math.log(t0)) * (x - x0) / (x1 - x0))


def satterthwaite_dof(parts: list[tuple[float, float]]) -> float:
    """Effective degrees of freedom of a sum of independent variance estimates, each given as
    (its value, its dof): (sum v)^2 / sum(v^2 / dof). Parts of value 0 do not count."""
    parts = [(v, d) for v, d in parts if v > 0]
    if not parts:
        return math.inf
    return sum(v for v, _ in parts) ** 2 / sum(v * v / d for v, d in parts)


@dataclass(frozen=True)
class Interval:
    """A 95 % interval around a figure that is a geometric mean over sessions.

    Which question it answers is in its name where it is made (within_run_interval,
    rerun_interval) and in the Result field it lands in. Computed on the log scale: ratios and
    times are multiplicative, so a 1.2x faster and a 1.2x slower session are equally far from
    the centre. One session has no interval (low = high = None).
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

    @property
    def bounds(self) -> list[float] | None:
        return None if self.low is None else [self.low, self.high]

    def holds(self, value: float) -> bool:
        return self.low is not None and self.low <= value <= self.high

    def clears_below(self, other: Interval) -> bool:
        """True when this interval lies wholly below the other (both must be known)."""
        return self.high is not None and other.low is not None and self.high < other.low


def _logs(values) -> np.ndarray:
    logs = np.log(np.asarray(list(values), dtype=np.float64))
    if not logs.size:
        raise ValueError("no sessions")
    if not np.isfinite(logs).all():
        raise ValueError(f"session values must be positive: {list(values)}")
    return logs


def within_run_interval(values) -> Interval:
    """95 % confidence interval for this run's figure: exp(mean ± t(n−1)·s/√n) over the
    session log values. What it leaves out on purpose: the run-level term, which two variants
    of the same run share, so it is the interval to compare them by; and the next run's own
    noise, so it is not where a rerun lands (rerun_interval is)."""
    logs = _logs(values)
    centre, n = float(logs.mean()), logs.size
    if n < 2:
        return Interval(math.exp(centre), None, None, n)
    half = t975(n - 1) * float(logs.std(ddof=1)) / math.sqrt(n)
    return Interval(math.exp(centre), math.exp(centre - half), math.exp(centre + half), n)


@dataclass(frozen=True)
class RunLevel:
    """The run-to-run variance of one kind of figure (log p50, or log speed-up) beyond what
    session noise explains, pooled over a machine's earlier runs (run_level_variance)."""
    log_var: float  # sigma_R^2: variance of a run's log figure from the run alone; 0 when none shows
    log_var_se: float  # standard error of that estimate: with few runs it is as large as the estimate
    runs: int  # earlier runs it came from
    rows: int  # (variant, threads) rows seen in two or more of them

    def as_dict(self) -> dict:
        return asdict(self)


def rerun_interval(values, run_level: RunLevel | None, next_sessions: int | None = None) -> Interval | None:
    """95 % prediction interval for the figure a rerun with `next_sessions` sessions (default:
    as many as this run) would report: exp(mean ± t(ν)·sqrt(V)), V = 2·σ_R² + s²·(1/n + 1/n').

    Both runs draw their own run-level effect (2·σ_R², from the history) and their own
    sessions (s²/n and s²/n', s from this run's sessions). ν is Satterthwaite's for V, from the
    variance of each estimate: Var(σ_R²) as run_level_variance gives it, and 2·b²/(n − 1) for
    the sessions' part b. Fed observed mean squares, that formula gives far too few dof when
    σ_R² comes out near zero (the subtracted session term shrinks the estimate, not its
    variance), while the dof of a sum of positive parts is never below its smallest part's:
    ν is floored at min(H − 1, n − 1), H the earlier runs. With few of them t stays large, as it
    should: two runs cannot say much about how far the machine moves between runs (simulated
    in tests/test_intervals.py). None without a run level (no history yet) or with one session."""
    logs = _logs(values)
    n = logs.size
    if run_level is None or n < 2:
        return None
    centre, var = float(logs.mean()), float(logs.var(ddof=1))
    sessions = var * (1 / n + 1 / (next_sessions or n))
    total = 2 * run_level.log_var + sessions
    spread = 4 * run_level.log_var_se ** 2 + 2 * sessions ** 2 / (n - 1)
    dof = max(2 * total * total / spread if spread > 0 else math.inf, min(run_level.runs - 1, n - 1))
    half = t975(dof) * math.sqrt(total)
    return Interval(math.exp(centre), math.exp(centre - half), math.exp(centre + half), n)


def run_level_variance(rows: list[list[list[float]]], runs: list[list[int]] | None = None
                       ) -> tuple[float, float] | None:
    """(sigma_R^2, its standard error) from earlier runs: the variance of a run's log figure that its own
    sessions do not explain, with the run effect shared by every row of a run.

    rows: one entry per (variant, threads) row: the session log values of each earlier run it
    was measured in. runs: for each row, the index of the run each of those entries came
    from (default: 0, 1, 2, ... for every row), so that a run's shared effect can be told from
    each row's own.

    The model (Kalibera & Jones' variance components, with the run effect crossed with rows):
    a row's run mean m_gj = mu_g + r_j + u_gj + e_gj, where r_j is the machine's state in run j,
    common to all rows ("5 % faster in the third run for every variant"), u_gj what is left to
    one row in one run, and e_gj the session noise of the mean, whose variance W = s^2/n each run
    measures itself. With K rows and H runs, the two-way mean squares are
        MS_run = K·var_j(c_j)      E = K·s_r^2 + s_u^2 + W   (H − 1 dof)
        MS_res = residual variance E = s_u^2 + W              ((K − 1)(H − 1) dof)
    where c_j is run j's mean deviation over rows, so
        sigma_R^2 = s_r^2 + s_u^2 = MS_run/K + (1 − 1/K)·MS_res − W.
    The shared part has only H − 1 dof however many rows there are: pooling rows narrows the
    row-specific part, not the machine's. The standard error is that of this sum of mean
    squares, each with variance 2·M²/dof (Satterthwaite), the subtracted W included. Negative
    estimates (no run-level spread beyond the sessions') become 0; their standard error stays.
    None when fewer than two runs or no row in two of them.
    """
    cells = []  # (row, run, run mean, s^2/n, n − 1)
    for g, row in enumerate(rows):
        indices = runs[g] if runs is not None else list(range(len(row)))
        kept = [(j, np.asarray(logs, dtype=np.float64)) for j, logs in zip(indices, row) if len(logs) >= 2]
        if len(kept) >= 2:
            cells += [(g, j, logs.mean(), logs.var(ddof=1) / logs.size, logs.size - 1) for j, logs in kept]
    if not cells:
        return None
    row, run, mean, within, dof = (np.array(column) for column in zip(*cells))
    row_ids, row_index = np.unique(row, return_inverse=True)
    run_ids, run_index = np.unique(run, return_inverse=True)
    h = len(run_ids)
    if h < 2:
        return None
    deviation = mean - (np.bincount(row_index, mean) / np.bincount(row_index))[row_index]
    run_effect = np.bincount(run_index, deviation) / np.bincount(run_index)
    k = len(cells) / h  # rows per run (an average when unbalanced)
    ms_run_k = float(run_effect.var(ddof=1))  # MS_run / K
    residual_dof = len(cells) - len(row_ids) - h + 1
    ms_res = float(((deviation - run_effect[run_index]) ** 2).sum() / residual_dof) if residual_dof > 0 else 0.0
    w = float(within.mean())
    parts = [(ms_run_k, h - 1), (w, satterthwaite_dof(list(zip(within.tolist(), dof.tolist()))))]
    if residual_dof > 0:
        parts.append(((1 - 1 / k) * ms_res, residual_dof))
    estimate = ms_run_k + ((1 - 1 / k) * ms_res if residual_dof > 0 else 0.0) - w
    se = math.sqrt(sum(2 * v * v / d for v, d in parts if math.isfinite(d)))
    return max(0.0, estimate), se


@dataclass(frozen=True)
class Coverage:
    """How often reruns landed inside the intervals meant to hold them, and whether that is
    consistent with the nominal rate (a 99 % Wilson interval of the observed rate holds it)."""
    held: int
    trials: int
    nominal: float
    low: float
    high: float

    @property
    def rate(self) -> float:
        return self.held / self.trials

    @property
    def consistent(self) -> bool:
        return self.low <= self.nominal <= self.high


def coverage_check(held: int, trials: int, nominal: float = 0.95, z: float = 2.576) -> Coverage:
    """The check a scheme of intervals must pass on simulated or recorded reruns: an interval
    that holds reruns 80 % of the time, or a confidence interval printed where a prediction
    interval is due, fails it (tests/test_intervals.py)."""
    if trials <= 0:
        raise ValueError("no trials")
    p = held / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    spread = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return Coverage(held, trials, nominal, max(0.0, centre - spread), min(1.0, centre + spread))
