"""Two result folders side by side: which variants got slower or faster, judged on figures the
machine's own drift cannot move.

A variant's speed-up is a ratio to eager FP32 timed in the same rounds, seconds apart, so a
machine that is 5 % slower today (a neighbour, its clock) slows both alike and leaves the
speed-up alone: speed-ups are what a regression is judged on. A change counts when the new
speed-up differs from the old by more than the two runs' uncertainties combined (their within-run
intervals, plus the speed-ups' small run-to-run term when this machine's history knows it) and by
more than the threshold. Absolute p50s move with the machine, so they are judged only together
with the machine's run-to-run spread (bench/history.py); without a history they are shown, not
judged. A variant that was measured before and is FAILED or skipped now is a regression whatever
its timing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from mobilenet.bench.stats import t975
from mobilenet.registry import REFERENCE_ID, display_order
from mobilenet.results import Result, load_results

DEFAULT_THRESHOLD_PCT = 10.0
NO_SPREAD = "run-to-run spread not yet known"


def _log_se(ci: list | None, sessions: int | None) -> float | None:
    """A figure's standard error on the log scale, read back from its within-run interval
    (half-width = t(n − 1)·se)."""
    if not ci or not sessions or sessions < 2 or ci[0] <= 0:
        return None
    return math.log(ci[1] / ci[0]) / 2 / t975(sessions - 1)


def _run_term(old: Result, new: Result, name: str) -> tuple[float, float] | None:
    """(2·σ_R², its dof) for figure `name` ("p50" or "speedup"): both runs drew their own
    run-level effect. From the newer run's history, else the older's; None when neither knew."""
    for r in (new, old):
        level = r.run_level or {}
        if level.get(f"{name}_log_var") is not None:
            var, se = level[f"{name}_log_var"], level.get(f"{name}_log_var_se") or 0.0
            dof = max(var * var * 2 / (se * se) if se else math.inf, level.get("runs", 2) - 1, 1)
            return 2 * var, dof
    return None


@dataclass(frozen=True)
class Judgement:
    """One figure's change between two runs and whether it is beyond their combined noise."""
    change_pct: float  # positive = slower
    half_pct: float  # the combined 95 % half-width of the change, in percent
    beyond_noise: bool


def _judge(old_value: float, new_value: float, old_se: float, new_se: float, old_n: int, new_n: int,
           run_term: tuple[float, float] | None, slower_when_larger: bool) -> Judgement:
    """log(new/old) against t(ν)·sqrt(se_old² + se_new² + 2·σ_R²), ν by Satterthwaite."""
    d = math.log(new_value / old_value) * (1 if slower_when_larger else -1)
    parts = [(old_se ** 2, old_n - 1), (new_se ** 2, new_n - 1)] + ([run_term] if run_term else [])
    total = sum(v for v, _ in parts)
    shown = [(v, dof) for v, dof in parts if v > 0]
    dof = total ** 2 / sum(v * v / dof for v, dof in shown) if shown else math.inf
    half = t975(dof) * math.sqrt(total)
    return Judgement((math.exp(d) - 1) * 100, (math.exp(half) - 1) * 100, abs(d) > half)


@dataclass(frozen=True)
class Change:
    variant: str
    threads: int
    old: Result
    new: Result
    threshold_pct: float

    @property
    def p50_change_pct(self) -> float:  # positive = slower
        return (self.new.p50_ms / self.old.p50_ms - 1) * 100

    @property
    def speedup(self) -> Judgement | None:
        """The speed-up's change (positive = slower against the reference), or None when it
        cannot be judged: the reference itself (1 by definition), a run without eager FP32, or
        an old run of one session (no interval)."""
        a, b = self.old, self.new
        if self.variant == REFERENCE_ID or not (a.speedup_vs_eager and b.speedup_vs_eager):
            return None
        old_se, new_se = _log_se(a.speedup_ci, a.sessions), _log_se(b.speedup_ci, b.sessions)
        if old_se is None or new_se is None:
            return None
        return _judge(a.speedup_vs_eager, b.speedup_vs_eager, old_se, new_se, a.sessions, b.sessions,
                      _run_term(a, b, "speedup"), slower_when_larger=False)

    @property
    def p50(self) -> Judgement | None:
        """The absolute p50's change, judged with the machine's run-to-run spread; None without it."""
        a, b = self.old, self.new
        old_se, new_se = _log_se(a.p50_ci_ms, a.sessions), _log_se(b.p50_ci_ms, b.sessions)
        run_term = _run_term(a, b, "p50")
        if old_se is None or new_se is None or run_term is None:
            return None
        return _judge(a.p50_ms, b.p50_ms, old_se, new_se, a.sessions, b.sessions, run_term, slower_when_larger=True)

    @property
    def speedup_change_pct(self) -> float | None:
        judged = self.speedup
        return judged.change_pct if judged else None

    @property
    def change_pct(self) -> float:
        """The change the verdict rests on: the speed-up's when it is judged, else the p50's."""
        judged = self.speedup
        return judged.change_pct if judged else self.p50_change_pct

    def _word(self, judged: Judgement, what: str) -> str:
        if not judged.beyond_noise:
            return f"unchanged ({what} inside the combined 95 % interval)"
        if abs(judged.change_pct) <= self.threshold_pct:
            return "unchanged (beyond noise, below threshold)"
        return "REGRESSED" if judged.change_pct > 0 else "improved"

    @property
    def verdict(self) -> str:
        speedup, p50 = self.speedup, self.p50
        if speedup is not None:
            word = self._word(speedup, "speed-up")
            if word.startswith("unchanged") and p50 is not None and self._word(p50, "p50") == "REGRESSED":
                return "REGRESSED (absolute p50, beyond the run-to-run spread; the speed-up held)"
            return word
        if p50 is not None:
            word = self._word(p50, "p50, with the run-to-run spread,")
            return "REGRESSED (absolute p50)" if word == "REGRESSED" else word
        if not self.old.p50_ci_ms:
            return "not judged (the old run has no interval: it had one session)"
        why = ("its speed-up is 1 by definition" if self.variant == REFERENCE_ID else "no speed-up to judge")
        return f"not judged ({why}; an absolute p50 needs this machine's run-to-run spread, not yet known)"

    @property
    def p50_note(self) -> str:
        judged = self.p50
        if judged is None:
            return f"{self.p50_change_pct:+.1f} % ({NO_SPREAD})"
        where = "beyond" if judged.beyond_noise else "inside"
        return f"{self.p50_change_pct:+.1f} % ({where} the run-to-run spread, ±{judged.half_pct:.1f} %)"


@dataclass(frozen=True)
class Lost:
    """Measured in OLD, FAILED or skipped in NEW."""
    variant: str
    threads: int
    new_status: str
    reason: str


@dataclass(frozen=True)
class Comparison:
    old_machine: str
    new_machine: str
    threshold_pct: float
    changes: list[Change]
    lost: list[Lost]
    not_compared: list[str]  # "variant@Nt: why", for variants not measured in both

    @property
    def regressions(self) -> list:
        return [c for c in self.changes if c.verdict.startswith("REGRESSED")] + list(self.lost)

    @property
    def improvements(self) -> list[Change]:
        return [c for c in self.changes if c.verdict == "improved"]


def _single_machine(results: list[Result], name: str) -> str:
    machines = sorted({r.env.machine_id for r in results})
    if not machines:
        raise ValueError(f"{name} holds no results")
    if len(machines) > 1:
        raise ValueError(f"{name} holds results of {len(machines)} machines ({', '.join(machines)}); "
                         f"compare one machine's folder at a time")
    return machines[0]


def compare(old: list[Result], new: list[Result], threshold_pct: float = DEFAULT_THRESHOLD_PCT) -> Comparison:
    old_machine, new_machine = _single_machine(old, "OLD"), _single_machine(new, "NEW")
    old_by = {(r.variant, r.threads): r for r in old}
    new_by = {(r.variant, r.threads): r for r in new}
    changes, lost, not_compared = [], [], []
    for variant, threads in sorted(old_by.keys() | new_by.keys(), key=lambda vt: (vt[1], display_order(vt[0]))):
        a, b = old_by.get((variant, threads)), new_by.get((variant, threads))
        if a is not None and b is not None and a.measured and b.measured:
            changes.append(Change(variant, threads, a, b, threshold_pct))
        elif a is not None and a.measured and b is not None:
            lost.append(Lost(variant, threads, b.status, b.status_reason))
        else:
            why = ", ".join(f"{'not in' if r is None else r.status + ' in'} {label}"
                            for label, r in (("OLD", a), ("NEW", b)) if r is None or not r.measured)
            not_compared.append(f"{variant}@{threads}t: {why}")
    return Comparison(old_machine, new_machine, threshold_pct, changes, lost, not_compared)


def compare_folders(old_dir: Path, new_dir: Path, threshold_pct: float = DEFAULT_THRESHOLD_PCT) -> Comparison:
    for folder in (old_dir, new_dir):
        if not Path(folder).is_dir():
            raise ValueError(f"no such results folder: {folder}")
    return compare(load_results(old_dir), load_results(new_dir), threshold_pct)


def _speedup_cell(r: Result) -> str:
    if not r.speedup_vs_eager:
        return "—"
    ci = f" ({r.speedup_ci[0]:.2f}–{r.speedup_ci[1]:.2f})" if r.speedup_ci else ""
    return f"{r.speedup_vs_eager:.2f}×{ci}"


def render(comparison: Comparison) -> str:
    rows = []
    for c in comparison.changes:
        speedup = c.speedup
        rows.append([f"`{c.variant}`", c.threads, f"{_speedup_cell(c.old)} → {_speedup_cell(c.new)}",
                     f"{speedup.change_pct:+.1f} % (±{speedup.half_pct:.1f} %)" if speedup else "—",
                     f"{c.old.p50_ms:.2f} → {c.new.p50_ms:.2f}", c.p50_note, c.verdict])
    rows += [[f"`{x.variant}`", x.threads, "measured → " + x.new_status, "—", "—", "—",
              f"REGRESSED: {x.new_status} now ({x.reason})"] for x in comparison.lost]
    lines = [tabulate(rows, headers=["variant", "threads", "speed-up old → new (95% within-run)", "slower by",
                                     "p50 ms old → new", "p50 change", "verdict"],
                      tablefmt="github", disable_numparse=True)]
    known = [r for c in comparison.changes for r in (c.new, c.old) if r.run_level]
    basis = next((r.rerun_basis for r in known if r.rerun_basis), "from this machine's history") if known else None
    lines.append(f"\nJudged on speed-ups: each is a ratio to eager FP32 timed in the same rounds, so a machine "
                 f"that is faster or slower as a whole moves both and leaves it alone. A change counts when it "
                 f"lies beyond the combined 95 % interval (both runs' within-run intervals, plus the speed-ups' "
                 f"run-to-run term when known) and exceeds {comparison.threshold_pct:g} %. Absolute p50s move "
                 f"with the machine; they are judged only with its run-to-run spread"
                 + (f" ({basis})." if basis else ", here not yet known (fewer than two earlier runs of this "
                                                  "machine with these settings): shown, not judged.")
                 + " A variant measured before and FAILED or skipped now is a regression.")
    if comparison.old_machine != comparison.new_machine:
        lines.append(f"Note: different machines (OLD {comparison.old_machine}, NEW {comparison.new_machine}): "
                     f"the change includes the machine.")
    lines += [f"Not compared: {item}" for item in comparison.not_compared]
    return "\n".join(lines)
