"""Scores against labels and against the FP32 reference, their uncertainty, and the correctness gate.

One decision rule everywhere (top-1, top-5, agreement, the gate): classes are ranked by
logit with ties broken towards the LOWER class index, which is also what argmax does.
INT8 logits sit on a coarse grid, so two classes often tie at the top; an unstable sort
would make the published top-1 depend on the sort's internals.

Uncertainty. ~200 photos is a small sample: one photo is half a point. Every proportion
carries its 95 % Wilson score interval (Wilson 1927; it keeps its coverage near 0 % and
100 %, where agreement lives, unlike the normal approximation). A variant and FP32 answer
the SAME photos, so their top-1 difference is paired: its 95 % interval is Newcombe's
method 10 (hybrid score; Newcombe 1998, Stat Med 17:2635), which combines the two Wilson
intervals with the observed correlation between the two answers and so is far narrower
than treating them as independent samples. The exact McNemar p-value (binomial on the
discordant photos) is reported as a fact; the gate does not use it, because "no
difference shown" is not the question the gate asks.

The gate decides on interval bounds, against margins fixed in advance (the same figures
the earlier point-estimate gate used, so the meaning of each status is unchanged; only
the evidence needed for it is):

- top-1 difference (variant - FP32, points) with 95 % interval [L, U]: DEGRADED margin
  -2 points (post-training INT8 of MobileNet-V2 is expected to cost well under 2 points;
  more is a loss a user would notice), FAILED margin -5 points (beyond that the artifact
  is broken rather than lossy: wrong preprocessing, calibration or kernel).
- agreement with FP32's top-1, with Wilson interval [aL, aU]: DEGRADED margin 90 % (one
  answer in ten differs from FP32), FAILED margin 80 %.

Statuses, in this order:
- FAILED: U < -5 or aU < 80 (surely beyond a FAILED margin).
- DEGRADED: U < -2 or aU < 90 (surely beyond a DEGRADED margin). This is the least it is:
  the reason says when FAILED is not excluded.
- ok: L >= -2 and aL >= 90 (non-inferiority shown within both margins).
- INCONCLUSIVE: otherwise; the photos cannot tell, and the reason estimates how many
  would. INCONCLUSIVE never becomes ok. It is kept, timed and shown like DEGRADED, and
  does not make a command fail; only FAILED does.

Each bound is one side of a two-sided 95 % interval, i.e. a one-sided test at 2.5 %. ok
needs both bounds (an intersection-union test), so a variant truly at a margin is called
ok at most 2.5 % of the time; DEGRADED/FAILED fire on either criterion, so a variant truly
at a margin is wrongly flagged up to 5 % of the time. Without labels only agreement is
judged. FP32 conversions are judged by fp32_parity instead (exact parity, not a margin).

FP32 parity is judged against the logits' scale as well as in logit units: the same top-1 on
every photo, max |Δlogit| <= 1e-3, and max |Δlogit| <= 1e-4 of the scale, the largest |logit|
eager FP32 gave on these photos. For trained weights (MobileNet-V2's scale is about 33 on the
sample photos) the absolute limit is the tighter one, as it always was; the relative one is
what a model of small logits is held to, random weights above all: with torchvision's
initialisation their logits are about 1e-9, which no absolute limit can tell from a broken
conversion. FP32 conversions of MobileNet-V2 were measured within about 1e-6 of the scale (on
an AMD EPYC with AVX2; docs/models.md).

With random weights the INT8 answers are built and timed but not judged (int8_check): a
random network's agreement says nothing about what quantization costs a trained one.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# The gate's margins: top-1 difference in points, agreement in percent (see the docstring).
FAILED_MIN_AGREEMENT_PCT = 80.0
FAILED_MAX_TOP1_DROP = 5.0
DEGRADED_MIN_AGREEMENT_PCT = 90.0
DEGRADED_MAX_TOP1_DROP = 2.0
# Two-sided 95 % intervals throughout.
Z95 = 1.96
# An FP32 conversion must reproduce eager FP32: same top-1 everywhere, logits this close, in
# logit units and as a fraction of the logits' scale (max |logit| of eager FP32).
FP32_MAX_ABS_DLOGIT = 1e-3
FP32_MAX_REL_DLOGIT = 1e-4
NOT_JUDGED = "not judged (random weights)"
# Beyond this many photos the "about N would" estimate says "no practical number" instead.
MAX_PHOTOS_ESTIMATE = 10_000_000

OK, DEGRADED, FAILED, SKIPPED = "ok", "DEGRADED", "FAILED", "skipped"
INCONCLUSIVE = "INCONCLUSIVE"


def ranked(logits: np.ndarray, k: int) -> np.ndarray:
    """The k best classes of each row, ties to the lower class index (the module's rule)."""
    return np.argsort(-np.asarray(logits), axis=1, kind="stable")[:, :k]


def topk_correct(logits: np.ndarray, labels, k: int) -> np.ndarray:
    """Per photo: is the label among the k best classes?"""
    labels = np.asarray(labels)
    return (ranked(logits, k) == labels[:, None]).any(axis=1)


def topk_pct(logits: np.ndarray, labels, k: int) -> float:
    return float(topk_correct(logits, labels, k).mean() * 100)


def agrees(logits: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per photo: same top-1 class as the reference?"""
    return ranked(logits, 1)[:, 0] == ranked(reference, 1)[:, 0]


def agreement_pct(logits: np.ndarray, reference: np.ndarray) -> float:
    return float(agrees(logits, reference).mean() * 100)


def tied_top1_rows(logits: np.ndarray) -> int:
    """Rows whose maximum logit is shared by two or more classes."""
    logits = np.asarray(logits)
    return int(((logits == logits.max(axis=1, keepdims=True)).sum(axis=1) > 1).sum())


def max_abs_dlogit(logits: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(logits.astype(np.float64) - reference).max())


# ---------------------------------------------------------------- intervals and tests

def _wilson(k: float, n: float, z: float) -> tuple[float, float]:
    """Wilson score interval of k successes in n, as proportions. k and n may be fractional
    (the photo-count estimate scales observed counts)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(max(0.0, p * (1 - p) / n + z * z / (4 * n * n))) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson_interval(k: float, n: float, z: float = Z95) -> tuple[float, float]:
    """95 % (by default) Wilson score interval of k successes in n trials, in percent."""
    low, high = _wilson(k, n, z)
    return low * 100, high * 100


def mcnemar_exact_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: under "no difference" each of the b + c discordant
    photos goes either way with probability 1/2, so min(b, c) is Binomial(b + c, 1/2)."""
    m = b + c
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2 ** m)  # exact integers until this one division


def newcombe_paired_interval(a: float, b: float, c: float, d: float, z: float = Z95) -> tuple[float, float]:
    """Newcombe's method 10 interval for p1 - p2 of paired proportions, as proportions, in his
    notation: a = both yes, b = first yes and second no, c = first no and second yes,
    d = both no; p1 = (a + b) / n, p2 = (a + c) / n.

    Each side combines the distances from each proportion to its Wilson limit, corrected by
    phi, the correlation of the two answers; as in the paper, a positive a*d - b*c is reduced
    by n/2 (and to no less than 0) before phi is formed, and phi is 0 when a margin is empty."""
    n = a + b + c + d
    if n <= 0:
        return -1.0, 1.0
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = _wilson(a + b, n, z)
    l2, u2 = _wilson(a + c, n, z)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    if cross > 0:
        cross = max(0.0, cross - n / 2)
    phi = cross / math.sqrt(margins) if margins > 0 else 0.0
    theta = p1 - p2
    below = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    above = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, theta - below), min(1.0, theta + above)


@dataclass(frozen=True)
class Paired:
    """A variant against FP32 on the same photos, by top-1 correctness."""
    a: int  # both right
    b: int  # FP32 right, this variant wrong
    c: int  # FP32 wrong, this variant right
    d: int  # both wrong
    p_value: float  # exact McNemar, two-sided
    diff_pts: float  # variant - FP32 top-1, percentage points
    diff_ci_pts: tuple[float, float]  # its 95 % interval (Newcombe's method 10)

    @property
    def photos(self) -> int:
        return self.a + self.b + self.c + self.d


def _diff_interval_pts(a: float, b: float, c: float, d: float) -> tuple[float, float]:
    """95 % interval of variant - FP32 in points from the table above. Newcombe's p1 is the
    variant's, so his "first yes, second no" is our c."""
    low, high = newcombe_paired_interval(a, c, b, d)
    return low * 100, high * 100


def compare_paired(correct, reference_correct) -> Paired:
    """The paired comparison of a variant's per-photo top-1 correctness with FP32's."""
    mine, theirs = np.asarray(correct, dtype=bool), np.asarray(reference_correct, dtype=bool)
    a, b = int((mine & theirs).sum()), int((~mine & theirs).sum())
    c, d = int((mine & ~theirs).sum()), int((~mine & ~theirs).sum())
    n = a + b + c + d
    return Paired(a, b, c, d, mcnemar_exact_p(b, c), (c - b) * 100 / n if n else 0.0,
                  _diff_interval_pts(a, b, c, d))


# ---------------------------------------------------------------- scores

@dataclass(frozen=True)
class Scores:
    top1_pct: float | None
    top5_pct: float | None
    agreement_pct: float
    max_abs_dlogit: float
    tied_top1_rows: int = 0
    photos: int = 0
    top1_correct: int | None = None
    top5_correct: int | None = None
    agreeing: int = 0  # photos whose top-1 is FP32's
    top1_ci_pct: tuple[float, float] | None = None  # 95 % Wilson intervals, percent
    top5_ci_pct: tuple[float, float] | None = None
    agreement_ci_pct: tuple[float, float] | None = None
    paired: Paired | None = None  # against FP32's top-1, when there are labels


def score(logits: np.ndarray, reference: np.ndarray, labels) -> Scores:
    photos = len(logits)
    agreeing = int(agrees(logits, reference).sum())
    common = dict(agreement_pct=agreeing * 100 / photos, max_abs_dlogit=max_abs_dlogit(logits, reference),
                  tied_top1_rows=tied_top1_rows(logits), photos=photos, agreeing=agreeing,
                  agreement_ci_pct=wilson_interval(agreeing, photos))
    if labels is None:
        return Scores(top1_pct=None, top5_pct=None, **common)
    top1, top5 = topk_correct(logits, labels, 1), topk_correct(logits, labels, 5)
    k1, k5 = int(top1.sum()), int(top5.sum())
    return Scores(top1_pct=k1 * 100 / photos, top5_pct=k5 * 100 / photos, top1_correct=k1, top5_correct=k5,
                  top1_ci_pct=wilson_interval(k1, photos), top5_ci_pct=wilson_interval(k5, photos),
                  paired=compare_paired(top1, topk_correct(reference, labels, 1)), **common)


# ---------------------------------------------------------------- the gate

# What the gate reads: photos, photos agreeing with FP32, and the paired table (a, b, c, d)
# or None. Counts may be fractional: the photo estimate scales them to other sample sizes.
_Counts = tuple[float, float, "tuple[float, float, float, float] | None"]


def _bounds(counts: _Counts) -> tuple[tuple[float, float], tuple[float, float] | None]:
    photos, agreeing, table = counts
    return wilson_interval(agreeing, photos), (_diff_interval_pts(*table) if table else None)


def _status(counts: _Counts) -> str:
    (a_low, a_high), diff = _bounds(counts)
    low, high = diff if diff else (math.inf, math.inf)
    if high < -FAILED_MAX_TOP1_DROP or a_high < FAILED_MIN_AGREEMENT_PCT:
        return FAILED
    if high < -DEGRADED_MAX_TOP1_DROP or a_high < DEGRADED_MIN_AGREEMENT_PCT:
        return DEGRADED
    if low >= -DEGRADED_MAX_TOP1_DROP and a_low >= DEGRADED_MIN_AGREEMENT_PCT:
        return OK
    return INCONCLUSIVE


def _counts(scores: Scores) -> _Counts:
    if not scores.photos:
        raise ValueError("the gate needs counts: score the answers with accuracy.score")
    p = scores.paired
    return scores.photos, scores.agreeing, ((p.a, p.b, p.c, p.d) if p else None)


def _scaled(counts: _Counts, photos: float) -> _Counts:
    n, agreeing, table = counts
    s = photos / n
    return photos, agreeing * s, (tuple(x * s for x in table) if table else None)


def _smallest(decided: Callable[[int], bool], start: int) -> int | None:
    """The smallest n > start with decided(n), by doubling then bisection; None past the cap.
    decided is monotone here: at fixed rates every interval only narrows as n grows."""
    low, high = start, start * 2
    while not decided(high):
        if high > MAX_PHOTOS_ESTIMATE:
            return None
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if decided(middle) else (middle, high)
    return high


def _round_up(n: int) -> int:
    """Up to two significant figures: an estimate should not look more precise than it is."""
    step = 10 ** max(0, len(str(n)) - 2)
    return -(-n // step) * step


def photos_needed(scores: Scores) -> int | None:
    """About how many photos would settle the gate at the observed rates: the photos scored
    when it is already settled, None when no practical number would (a rate on a margin).

    The observed rates are held fixed and the counts scaled to n photos; the intervals
    recomputed from them narrow roughly as 1/sqrt(n), and the estimate is the smallest n at
    which the gate is no longer INCONCLUSIVE (a bound clears its margin), rounded up to two
    significant figures. It is a planning figure, not a promise: with more photos the rates
    themselves move, by about the current intervals' width."""
    counts = _counts(scores)
    if _status(counts) != INCONCLUSIVE:
        return scores.photos
    found = _smallest(lambda n: _status(_scaled(counts, n)) != INCONCLUSIVE, int(counts[0]))
    return _round_up(found) if found is not None else None


def _facts(scores: Scores) -> str:
    a_low, a_high = scores.agreement_ci_pct or wilson_interval(scores.agreeing, scores.photos)
    facts = f"agreement {scores.agreement_pct:.1f}% [{a_low:.1f}, {a_high:.1f}]"
    p = scores.paired
    if p:
        low, high = p.diff_ci_pts
        facts += (f", top-1 {p.diff_pts:+.1f} pts [{low:+.1f}, {high:+.1f}] vs FP32 (FP32 right/this wrong {p.b},"
                  f" this right/FP32 wrong {p.c}, exact McNemar p={p.p_value:.3g})")
    return f"{facts}, {scores.photos} photos"


def gate(scores: Scores) -> tuple[str, str]:
    """(status, reason) of the correctness gate on the interval bounds (module docstring).
    Without labels (no paired comparison) only agreement is judged."""
    counts = _counts(scores)
    status = _status(counts)
    facts = _facts(scores)
    (a_low, a_high), diff = _bounds(counts)
    if status == FAILED:
        return FAILED, (f"{facts} (surely below {FAILED_MIN_AGREEMENT_PCT:.0f}% agreement"
                        + (f" or more than {FAILED_MAX_TOP1_DROP:.0f} pts down)" if diff else ")"))
    if status == DEGRADED:
        maybe_failed = a_low < FAILED_MIN_AGREEMENT_PCT or (diff is not None and diff[0] < -FAILED_MAX_TOP1_DROP)
        return DEGRADED, (f"{facts} (surely below {DEGRADED_MIN_AGREEMENT_PCT:.0f}% agreement"
                          + (f" or more than {DEGRADED_MAX_TOP1_DROP:.0f} pts down" if diff else "")
                          + ("; FAILED not excluded)" if maybe_failed else ")"))
    if status == OK:
        return OK, facts
    open_questions = [f"agreement >= {DEGRADED_MIN_AGREEMENT_PCT:.0f}%"] if a_low < DEGRADED_MIN_AGREEMENT_PCT else []
    if diff and diff[0] < -DEGRADED_MAX_TOP1_DROP:
        open_questions.append(f"top-1 >= -{DEGRADED_MAX_TOP1_DROP:.0f} pts")
    needed = photos_needed(scores)
    verdict = f"about {needed} would" if needed else "no practical number would at these rates (one sits on a margin)"
    return INCONCLUSIVE, (f"{facts}: {' and '.join(open_questions)} neither shown nor ruled out; "
                          f"{scores.photos} photos cannot tell, {verdict}")


def logit_scale(reference: np.ndarray) -> float:
    """The largest |logit| of the reference: what FP32 parity is judged relative to."""
    return float(np.abs(np.asarray(reference, dtype=np.float64)).max())


def parity_record(logits: np.ndarray, reference: np.ndarray) -> dict:
    """FP32 parity as the meta states it: the differences, the scale, the limits, the verdict."""
    delta, scale = max_abs_dlogit(logits, reference), logit_scale(reference)
    relative = delta / scale if scale > 0 else (0.0 if delta == 0 else math.inf)
    same_top1 = agreement_pct(logits, reference)
    return {"judged": "same top-1 on every photo, max |Δlogit| within an absolute limit and within a limit "
                      "relative to the logits' scale (max |logit| of eager FP32 on these photos)",
            "top1_agreement_pct": same_top1, "max_abs_dlogit": delta, "logit_scale": scale,
            "relative_dlogit": relative, "max_abs_limit": FP32_MAX_ABS_DLOGIT,
            "max_relative_limit": FP32_MAX_REL_DLOGIT,
            "ok": bool(same_top1 == 100.0 and delta <= FP32_MAX_ABS_DLOGIT and relative <= FP32_MAX_REL_DLOGIT)}


def fp32_parity(logits: np.ndarray, reference: np.ndarray) -> tuple[bool, str]:
    """An FP32 conversion is kept only if it matches eager: same top-1, max |Δlogit| <= 1e-3
    and <= 1e-4 of the logits' scale (module docstring)."""
    parity = parity_record(logits, reference)
    facts = (f"top-1 agreement {parity['top1_agreement_pct']:.1f}%, max |Δlogit| {parity['max_abs_dlogit']:.2e} "
             f"({parity['relative_dlogit']:.1e} of the logits' scale {parity['logit_scale']:.3g})")
    return parity["ok"], facts


def int8_check(scores: Scores, random_weights: bool) -> tuple[str, str]:
    """(status, reason) of an INT8 variant's check: the gate, or with random weights no judgement
    (status ok, so it is built and timed; the reason says it was not judged)."""
    if random_weights:
        return OK, f"{NOT_JUDGED}: a random network's agreement with FP32 says nothing of what INT8 costs"
    return gate(scores)
