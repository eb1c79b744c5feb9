"""Two result folders side by side: which variants got slower or faster, judged by intervals.

A change counts only when the new p50 lies outside the old run's 95 % rerun interval (the
range a rerun of the old code lands in; stats.Interval), so the difference is not the
machine's noise, and it is larger than the threshold (it matters). A variant that was
measured before and is FAILED or skipped now is a regression whatever its timing.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from mobilenet.registry import display_order
from mobilenet.results import Result, load_results

DEFAULT_THRESHOLD_PCT = 10.0


def _interval(r: Result) -> str:
    return f"{r.p50_ci_ms[0]:.2f}–{r.p50_ci_ms[1]:.2f}" if r.p50_ci_ms else "no interval"


@dataclass(frozen=True)
class Change:
    variant: str
    threads: int
    old: Result
    new: Result
    threshold_pct: float

    @property
    def change_pct(self) -> float:  # positive = slower
        return (self.new.p50_ms / self.old.p50_ms - 1) * 100

    @property
    def beyond_noise(self) -> bool:
        """Is the new p50 outside the range a rerun of the old run lands in?"""
        low, high = self.old.p50_ci_ms
        return not low <= self.new.p50_ms <= high

    @property
    def verdict(self) -> str:
        if not self.old.p50_ci_ms:
            return "not judged (the old run has no interval: it had one session)"
        if not self.beyond_noise:
            return "unchanged (inside the old run's rerun interval)"
        if abs(self.change_pct) <= self.threshold_pct:
            return "unchanged (beyond noise, below threshold)"
        return "REGRESSED" if self.change_pct > 0 else "improved"


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
        return [c for c in self.changes if c.verdict == "REGRESSED"] + list(self.lost)

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


def render(comparison: Comparison) -> str:
    rows = [[f"`{c.variant}`", c.threads, f"{c.old.p50_ms:.2f} ({_interval(c.old)})",
             f"{c.new.p50_ms:.2f} ({_interval(c.new)})", f"{c.change_pct:+.1f} %", c.verdict]
            for c in comparison.changes]
    rows += [[f"`{x.variant}`", x.threads, "measured", x.new_status, "—", f"REGRESSED: {x.new_status} now ({x.reason})"]
             for x in comparison.lost]
    lines = [tabulate(rows, headers=["variant", "threads", "old p50 ms (95% rerun)", "new p50 ms (95% rerun)", "change",
                                     "verdict"], tablefmt="github", disable_numparse=True)]
    lines.append(f"\nA change counts when the new p50 lies outside the old run's 95 % rerun interval (where a "
                 f"rerun of the old code lands) and it exceeds "
                 f"{comparison.threshold_pct:g} %; a variant measured before and FAILED or skipped now is a "
                 f"regression.")
    if comparison.old_machine != comparison.new_machine:
        lines.append(f"Note: different machines (OLD {comparison.old_machine}, NEW {comparison.new_machine}): "
                     f"the change includes the machine.")
    lines += [f"Not compared: {item}" for item in comparison.not_compared]
    return "\n".join(lines)
