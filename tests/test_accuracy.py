"""Accuracy with its uncertainty, and the gate that decides on interval bounds. Unit tests, no models."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
from test_report import make_result

from mobilenet import accuracy, results


def answers(a: int, b: int, c: int, d: int, agreeing_wrong: int = 0):
    """(variant logits, FP32 logits, labels) for a paired table: a photos both right, b FP32 right
    and the variant wrong, c the other way, d both wrong, of which `agreeing_wrong` give the same
    wrong class (so agreement = a + agreeing_wrong). Every photo's label is class 0."""
    n = a + b + c + d
    variant, reference = np.zeros((n, 10), np.float32), np.zeros((n, 10), np.float32)
    rows = [(0, 0)] * a + [(0, 2)] * b + [(1, 0)] * c + [(1, 1)] * agreeing_wrong + [(1, 3)] * (d - agreeing_wrong)
    for i, (ref_class, variant_class) in enumerate(rows):
        reference[i, ref_class] = variant[i, variant_class] = 5.0
    return variant, reference, [0] * n


def scored(*table, labelled=True) -> accuracy.Scores:
    variant, reference, labels = answers(*table)
    return accuracy.score(variant, reference, labels if labelled else None)


# ---------------------------------------------------------------- the statistics

def test_wilson_interval_pinned_values():
    low, high = accuracy.wilson_interval(166, 200)
    assert (round(low, 1), round(high, 1)) == (77.2, 87.6)
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", 81/263, method 3.
    low, high = accuracy.wilson_interval(81, 263)
    assert (round(low / 100, 4), round(high / 100, 4)) == (0.2553, 0.3662)
    # All agree: the interval still has width, and never leaves [0, 100].
    low, high = accuracy.wilson_interval(20, 20)
    assert high == 100.0 and 83 < low < 84


def test_mcnemar_exact_pinned_values():
    # 2 * P(X <= 2 | Binomial(10, 1/2)) = 2 * 56 / 1024.
    p = accuracy.mcnemar_exact_p(8, 2)
    assert p == pytest.approx(0.109375) and round(p, 3) == 0.109
    assert accuracy.mcnemar_exact_p(2, 8) == accuracy.mcnemar_exact_p(8, 2)
    # Fagerland, Lydersen & Laake (2017), the paired 2x2 table, Cavo et al. (2012): P = 0.052479.
    assert accuracy.mcnemar_exact_p(6, 16) == pytest.approx(0.052479, abs=5e-7)
    assert accuracy.mcnemar_exact_p(0, 0) == 1.0 and accuracy.mcnemar_exact_p(5, 5) == 1.0


def test_newcombe_paired_interval_matches_the_literature():
    # Fagerland, Lydersen & Laake (2017), Cavo et al. (2012): 59 6 / 16 80, estimate -0.0621,
    # Newcombe square-and-add (method 10) 95 % CI -0.1186 to -0.0046.
    low, high = accuracy.newcombe_paired_interval(59, 6, 16, 80)
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)
    # Without the paper's n/2 reduction of a*d - b*c the limits would be -0.1174 and -0.0059.


def _uncorrected_newcombe(a, b, c, d, z=1.96):
    """A second formulation (MOVER, Zou & Donner 2008, which Newcombe's method 10 is an instance
    of): Wilson limits as the roots of the score equation, combined with the plain phi
    coefficient, without the paper's n/2 reduction."""
    n = a + b + c + d

    def limits(k):  # roots in p of (k/n - p)^2 = z^2 p (1 - p) / n
        qa, qb, qc = 1 + z * z / n, -(2 * k / n + z * z / n), (k / n) ** 2
        root = math.sqrt(qb * qb - 4 * qa * qc)
        return (-qb - root) / (2 * qa), (-qb + root) / (2 * qa)

    (l1, u1), (l2, u2) = limits(a + b), limits(a + c)
    p1, p2 = (a + b) / n, (a + c) / n
    phi = (a * d - b * c) / math.sqrt((a + b) * (c + d) * (a + c) * (b + d))
    return (p1 - p2 - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2),
            p1 - p2 + math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))


def test_newcombe_paired_interval_against_a_second_formulation():
    # A negative a*d - b*c is used as it is, so there the two formulations must agree exactly.
    assert accuracy.newcombe_paired_interval(2, 10, 12, 1) == pytest.approx(_uncorrected_newcombe(2, 10, 12, 1))
    # A positive one is reduced by n/2: the interval is wider (less credit for correlation).
    ours, plain = accuracy.newcombe_paired_interval(160, 8, 2, 30), _uncorrected_newcombe(160, 8, 2, 30)
    assert ours[0] < plain[0] and ours[1] > plain[1]
    # Swapping the two raters negates the interval.
    low, high = accuracy.newcombe_paired_interval(160, 2, 8, 30)
    assert (low, high) == pytest.approx((-ours[1], -ours[0]))


def test_newcombe_paired_interval_covers_by_brute_force():
    """Exact coverage over every 2x2 table of n = 40 paired answers: near the nominal 95 %."""
    n, probs = 40, (0.5, 0.10, 0.05, 0.35)
    truth = probs[1] - probs[2]
    log_p = [math.log(p) for p in probs]
    log_fact = [math.lgamma(i + 1) for i in range(n + 1)]
    covered = 0.0
    for a in range(n + 1):
        for b in range(n + 1 - a):
            for c in range(n + 1 - a - b):
                d = n - a - b - c
                weight = math.exp(log_fact[n] - log_fact[a] - log_fact[b] - log_fact[c] - log_fact[d]
                                  + a * log_p[0] + b * log_p[1] + c * log_p[2] + d * log_p[3])
                low, high = accuracy.newcombe_paired_interval(a, b, c, d)
                covered += weight * (low <= truth <= high)
    assert 0.94 < covered < 0.98, covered


def test_scores_carry_counts_intervals_and_the_paired_comparison():
    scores = scored(160, 8, 2, 30, 25)
    assert (scores.photos, scores.top1_correct, scores.agreeing) == (200, 162, 185)
    assert scores.top1_pct == 81.0 and scores.agreement_pct == 92.5
    assert scores.top5_correct == 200  # the other classes tie at 0 and class 0 is the lowest index
    assert scores.top1_ci_pct == pytest.approx(accuracy.wilson_interval(162, 200))
    assert scores.agreement_ci_pct == pytest.approx(accuracy.wilson_interval(185, 200))
    paired = scores.paired
    assert (paired.a, paired.b, paired.c, paired.d, paired.photos) == (160, 8, 2, 30, 200)
    assert paired.diff_pts == -3.0 and round(paired.p_value, 3) == 0.109
    low, high = paired.diff_ci_pts  # variant - FP32: Newcombe's p1 is the variant's, his b our c
    expected = accuracy.newcombe_paired_interval(160, 2, 8, 30)
    assert (low, high) == pytest.approx((expected[0] * 100, expected[1] * 100)) and low < -3 < high
    unlabelled = scored(160, 8, 2, 30, 25, labelled=False)
    assert unlabelled.paired is None and unlabelled.top1_correct is None and unlabelled.agreeing == 185


# ---------------------------------------------------------------- the gate

def test_same_rates_are_inconclusive_at_20_photos_and_degraded_at_200():
    # 85 % agreement and 5 points down: at 200 photos agreement is surely below 90 %.
    small, large = scored(16, 1, 0, 3, 1), scored(160, 10, 0, 30, 10)
    assert small.agreement_pct == large.agreement_pct == 85.0
    assert small.paired.diff_pts == large.paired.diff_pts == -5.0
    status, reason = accuracy.gate(small)
    assert status == accuracy.INCONCLUSIVE, reason
    assert "20 photos cannot tell" in reason and re.search(r"about \d+ would", reason)
    status, reason = accuracy.gate(large)
    assert status == accuracy.DEGRADED, reason
    # Unlabelled: agreement alone, with the same outcome.
    assert accuracy.gate(scored(16, 1, 0, 3, 1, labelled=False))[0] == accuracy.INCONCLUSIVE
    assert accuracy.gate(scored(160, 10, 0, 30, 10, labelled=False))[0] == accuracy.DEGRADED


def test_ok_requires_the_bound_not_the_estimate():
    # Identical answers: perfect estimates, yet 20 photos cannot show >= 90 % agreement.
    assert accuracy.gate(scored(17, 0, 0, 3, 3))[0] == accuracy.INCONCLUSIVE
    status, reason = accuracy.gate(scored(170, 0, 0, 30, 30))
    assert status == accuracy.OK, reason
    # 95 % agreement and 1 point down clear both margins as estimates (the old gate said ok),
    # but the top-1 interval reaches below -2 points: not shown, so not ok.
    scores = scored(160, 6, 4, 30, 30)
    assert scores.agreement_pct == 95.0 and scores.paired.diff_pts == -1.0 and scores.paired.diff_ci_pts[0] < -2
    status, reason = accuracy.gate(scores)
    assert status == accuracy.INCONCLUSIVE and "top-1 >= -2 pts" in reason, reason


def test_failed_needs_a_bound_beyond_the_failed_margin():
    status, reason = accuracy.gate(scored(150, 20, 0, 30, 30))  # 10 points down, [-14.5, -5.8]
    assert status == accuracy.FAILED and "more than 5 pts down" in reason, reason
    assert accuracy.gate(scored(140, 0, 0, 60, 0, labelled=False))[0] == accuracy.FAILED  # 70 % agreement
    # Agreement 80.5 % [74.5, 85.4]: surely below 90 % but not surely below 80 %.
    status, reason = accuracy.gate(scored(150, 0, 0, 50, 11, labelled=False))
    assert status == accuracy.DEGRADED and "FAILED not excluded" in reason, reason


@pytest.mark.parametrize("table", [(160, 6, 4, 30, 30), (160, 8, 2, 30, 30), (16, 1, 0, 3, 1)])
def test_the_photo_estimate_settles_the_gate(table):
    scores = scored(*table)
    status, reason = accuracy.gate(scores)
    needed = int(re.search(r"about (\d+) would", reason).group(1))
    assert status == accuracy.INCONCLUSIVE and needed == accuracy.photos_needed(scores) > scores.photos
    # The same rates at that many photos settle it; at a third as many they still do not.
    def at(photos):
        scale = photos / scores.photos
        return accuracy.gate(scored(*(round(x * scale) for x in table)))[0]
    assert at(needed) != accuracy.INCONCLUSIVE
    assert at(needed // 3) == accuracy.INCONCLUSIVE


def test_a_rate_on_the_margin_has_no_photo_estimate():
    # Exactly 90 % agreement (and no top-1 question): no number of photos settles it.
    scores = scored(180, 0, 0, 20, 0, labelled=False)
    status, reason = accuracy.gate(scores)
    assert status == accuracy.INCONCLUSIVE and accuracy.photos_needed(scores) is None
    assert "no practical number would" in reason


def test_the_gate_needs_counts():
    with pytest.raises(ValueError, match="needs counts"):
        accuracy.gate(accuracy.Scores(None, None, 85.0, 0.1))


def test_inconclusive_is_a_measured_status_and_does_not_fail_a_run():
    assert accuracy.INCONCLUSIVE == results.INCONCLUSIVE and results.INCONCLUSIVE in results.STATUSES
    assert {accuracy.OK, accuracy.DEGRADED, accuracy.FAILED, accuracy.SKIPPED} <= set(results.STATUSES)
    row = make_result("onnx-int8", 5.0, status=accuracy.INCONCLUSIVE)
    assert row.measured and make_result("onnx-int8", 5.0, status=accuracy.DEGRADED).measured
    assert not make_result("onnx-int8", 5.0, status=accuracy.FAILED).measured
