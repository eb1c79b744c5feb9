"""Two result folders side by side: which variants got slower or faster beyond the noise.

A change counts only when it exceeds both the threshold and the noise the runs recorded
themselves: round_cv is the spread of per-round medians, i.e. how much the machine
drifted while it measured, so a change within k × the two runs' combined drift could be
the machine, not the code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from mobilenet.results import Result, load_results
from mobilenet.variants import display_order

NOISE_K = 2.0
DEFAULT_THRESHOLD_PCT = 10.0


@dataclass(frozen=True)
class Change:
    variant: str
    threads: int
    old_p50_ms: float
    new_p50_ms: float
    change_pct: float  # positive = slower
    noise_pct: float  # NOISE_K × sqrt(round_cv_old² + round_cv_new²)
    threshold_pct: float

    @property
    def bar_pct(self) -> float:
        """What |change| must exceed to count."""
        return max(self.threshold_pct, self.noise_pct)

    @property
    def verdict(self) -> str:
        if abs(self.change_pct) > self.bar_pct:
            return "REGRESSED" if self.change_pct > 0 else "improved"
        if abs(self.change_pct) > self.noise_pct:
            return "unchanged (beyond noise, below threshold)"
        return "unchanged (within noise)"


@dataclass(frozen=True)
class Comparison:
    old_machine: str
    new_machine: str
    threshold_pct: float
    noise_k: float
    changes: list[Change]
    not_compared: list[str]  # "variant@Nt: why", for variants not measured in both

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.verdict == "REGRESSED"]

    @property
    def improvements(self) -> list[Change]:
        return [c for c in self.changes if c.verdict == "improved"]


def change(old: Result, new: Result, threshold_pct: float = DEFAULT_THRESHOLD_PCT,
           k: float = NOISE_K) -> Change:
    noise = k * math.hypot(old.round_cv or 0.0, new.round_cv or 0.0) * 100
    return Change(old.variant, old.threads, old.p50_ms, new.p50_ms,
                  (new.p50_ms / old.p50_ms - 1) * 100, noise, threshold_pct)


def _single_machine(results: list[Result], name: str) -> str:
    machines = sorted({r.env.machine_id for r in results})
    if not machines:
        raise ValueError(f"{name} holds no results")
    if len(machines) > 1:
        raise ValueError(f"{name} holds results of {len(machines)} machines ({', '.join(machines)}); "
                         f"compare one machine's folder at a time")
    return machines[0]


def _why_not(label: str, r: Result | None) -> str | None:
    if r is None:
        return f"not in {label}"
    if not r.measured:
        return f"{r.status} in {label}"
    return None


def compare(old: list[Result], new: list[Result], threshold_pct: float = DEFAULT_THRESHOLD_PCT,
            k: float = NOISE_K) -> Comparison:
    old_machine, new_machine = _single_machine(old, "OLD"), _single_machine(new, "NEW")
    old_by = {(r.variant, r.threads): r for r in old}
    new_by = {(r.variant, r.threads): r for r in new}
    changes, not_compared = [], []
    for variant, threads in sorted(old_by.keys() | new_by.keys(),
                                   key=lambda vt: (vt[1], display_order(vt[0]))):
        a, b = old_by.get((variant, threads)), new_by.get((variant, threads))
        reasons = [why for why in (_why_not("OLD", a), _why_not("NEW", b)) if why]
        if reasons:
            not_compared.append(f"{variant}@{threads}t: {', '.join(reasons)}")
        else:
            changes.append(change(a, b, threshold_pct, k))
    return Comparison(old_machine, new_machine, threshold_pct, k, changes, not_compared)


def compare_folders(old_dir: Path, new_dir: Path, threshold_pct: float = DEFAULT_THRESHOLD_PCT) -> Comparison:
    for folder in (old_dir, new_dir):
        if not Path(folder).is_dir():
            raise ValueError(f"no such results folder: {folder}")
    return compare(load_results(old_dir), load_results(new_dir), threshold_pct)


def render(comparison: Comparison) -> str:
    rows = [[f"`{c.variant}`", c.threads, f"{c.old_p50_ms:.2f}", f"{c.new_p50_ms:.2f}",
             f"{c.change_pct:+.1f} %", f"±{c.noise_pct:.1f} %", c.verdict] for c in comparison.changes]
    lines = [tabulate(rows, headers=["variant", "threads", "old p50 ms", "new p50 ms", "change",
                                     "noise", "verdict"], tablefmt="github", disable_numparse=True)]
    lines.append(f"\nA change counts when it exceeds both {comparison.threshold_pct:g} % and the noise "
                 f"({comparison.noise_k:g} × the combined round-to-round CV of both runs).")
    if comparison.old_machine != comparison.new_machine:
        lines.append(f"Note: different machines (OLD {comparison.old_machine}, NEW {comparison.new_machine}): "
                     f"the change includes the machine.")
    lines += [f"Not compared: {item}" for item in comparison.not_compared]
    return "\n".join(lines)
