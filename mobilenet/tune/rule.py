"""The rule that picks a grid's winner, the same for every toolkit (docs/tuning.md states it).

On the tuning split, paired by photo:
1. The most accurate setting is the one agreeing with eager FP32's top-1 on the most tuning
   photos (ties: the shipped setting, then grid order).
2. A setting is refused as less accurate when it is significantly less accurate than that one:
   it loses more of the photos only one of the two gets right, and the exact McNemar test on
   those photos gives p < ALPHA.
3. A setting is refused as slower when its p50 within-run interval lies wholly above the
   shipped setting's (a setting with no interval, one session, is never called slower).
4. Of the settings left, the fastest by p50 and every one whose interval overlaps its interval
   are tied for speed; the most accurate of those wins (ties: the shipped setting, then grid
   order). Among settings the timing cannot tell apart, speed is no reason to lose accuracy.
The shipped setting is never slower than itself, so something is always left unless it is
itself less accurate; if nothing is left, the shipped setting is kept, and the verdict says so.

Pure numpy: tests exercise it on made-up answers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mobilenet.accuracy import mcnemar_exact_p

ALPHA = 0.05


@dataclass(frozen=True)
class Candidate:
    """A built, timed and scored setting."""
    name: str
    agrees: np.ndarray  # per tuning photo: same top-1 as eager FP32
    p50_ms: float
    p50_ci_ms: tuple[float, float] | None  # 95 % within-run interval over sessions
    shipped: bool = False

    @property
    def agreeing(self) -> int:
        return int(np.asarray(self.agrees, dtype=bool).sum())


@dataclass(frozen=True)
class Verdict:
    name: str
    less_accurate: bool  # refused by step 2
    slower_than_shipped: bool  # refused by step 3
    mcnemar_p_vs_best: float  # 1.0 for the most accurate itself
    only_best_right: int  # tuning photos the most accurate agrees on and this one does not
    only_this_right: int
    tied_for_speed: bool  # in step 4's tie with the fastest eligible setting
    winner: bool
    reason: str


def _overlap(a: Candidate, b: Candidate) -> bool:
    if a.p50_ci_ms is None or b.p50_ci_ms is None:
        return a.p50_ms == b.p50_ms
    return a.p50_ci_ms[0] <= b.p50_ci_ms[1] and b.p50_ci_ms[0] <= a.p50_ci_ms[1]


def _preference(candidates: list[Candidate]):
    """Sort key: more agreeing first, then the shipped setting, then grid order."""
    order = {c.name: i for i, c in enumerate(candidates)}
    return lambda c: (-c.agreeing, not c.shipped, order[c.name])


def pick(candidates: list[Candidate], alpha: float = ALPHA) -> tuple[str, list[Verdict]]:
    """(the winner's name, a verdict per candidate in their order)."""
    if not candidates:
        raise ValueError("no setting to choose from")
    shipped = next((c for c in candidates if c.shipped), None)
    if shipped is None:
        raise ValueError("the shipped setting is not among the candidates: the rule times every setting against it")
    lengths = {len(c.agrees) for c in candidates}
    if len(lengths) != 1:
        raise ValueError(f"the settings were scored on different photo counts: {sorted(lengths)}")
    prefer = _preference(candidates)
    best = min(candidates, key=prefer)
    tests = {}
    for c in candidates:
        best_only = int((np.asarray(best.agrees, bool) & ~np.asarray(c.agrees, bool)).sum())
        this_only = int((~np.asarray(best.agrees, bool) & np.asarray(c.agrees, bool)).sum())
        p = mcnemar_exact_p(best_only, this_only)
        less = c is not best and best_only > this_only and p < alpha
        slower = (c.p50_ci_ms is not None and shipped.p50_ci_ms is not None
                  and c.p50_ci_ms[0] > shipped.p50_ci_ms[1])
        tests[c.name] = (less, slower, p, best_only, this_only)
    eligible = [c for c in candidates if not tests[c.name][0] and not tests[c.name][1]]
    if eligible:
        fastest = min(eligible, key=lambda c: c.p50_ms)
        tied = [c for c in eligible if c is fastest or _overlap(c, fastest)]
        winner = min(tied, key=prefer)
    else:
        fastest, tied, winner = None, [], shipped
    verdicts = []
    for c in candidates:
        less, slower, p, best_only, this_only = tests[c.name]
        if c is winner and not eligible:
            reason = "kept: no setting passed both tests, so the shipped setting stays"
        elif c is winner:
            reason = ("winner: the most accurate of the settings tied for speed with the fastest eligible one"
                      if len(tied) > 1 else "winner: the fastest eligible setting, no other tied with it")
        elif less:
            reason = (f"refused: significantly less accurate than {best.name} ({c.agreeing} against "
                      f"{best.agreeing} agreeing; {best_only} photos only {best.name} gets, {this_only} only this; "
                      f"exact McNemar p={p:.3g} < {alpha:g})")
        elif slower:
            reason = (f"refused: slower than the shipped setting (p50 interval {c.p50_ci_ms[0]:.2f}–"
                      f"{c.p50_ci_ms[1]:.2f} ms above its {shipped.p50_ci_ms[0]:.2f}–{shipped.p50_ci_ms[1]:.2f} ms)")
        elif c in tied:
            reason = f"eligible, tied for speed with {winner.name} but less accurate, or later in the grid"
        else:
            reason = f"eligible, but slower than {fastest.name} (intervals apart)"
        verdicts.append(Verdict(c.name, less, slower, p, best_only, this_only, c in tied, c is winner, reason))
    return winner.name, verdicts
