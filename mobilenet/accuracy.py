"""Scores against labels and against the FP32 reference, and the correctness gate.

One decision rule everywhere (top-1, top-5, agreement, the gate): classes are ranked by
logit with ties broken towards the LOWER class index, which is also what argmax does.
INT8 logits sit on a coarse grid, so two classes often tie at the top; an unstable sort
would make the published top-1 depend on the sort's internals.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The gate, in percentage points, on the evaluation photos.
FAILED_MIN_AGREEMENT_PCT = 80.0
FAILED_MAX_TOP1_DROP = 5.0
DEGRADED_MIN_AGREEMENT_PCT = 90.0
DEGRADED_MAX_TOP1_DROP = 2.0
# An FP32 conversion must reproduce eager FP32: same top-1 everywhere, logits this close.
FP32_MAX_ABS_DLOGIT = 1e-3

OK, DEGRADED, FAILED, SKIPPED = "ok", "DEGRADED", "FAILED", "skipped"


def ranked(logits: np.ndarray, k: int) -> np.ndarray:
    """The k best classes of each row, ties to the lower class index (the module's rule)."""
    return np.argsort(-np.asarray(logits), axis=1, kind="stable")[:, :k]


def topk_pct(logits: np.ndarray, labels, k: int) -> float:
    labels = np.asarray(labels)
    return float((ranked(logits, k) == labels[:, None]).any(axis=1).mean() * 100)


def agreement_pct(logits: np.ndarray, reference: np.ndarray) -> float:
    return float((ranked(logits, 1) == ranked(reference, 1)).mean() * 100)


def tied_top1_rows(logits: np.ndarray) -> int:
    """Rows whose maximum logit is shared by two or more classes."""
    logits = np.asarray(logits)
    return int(((logits == logits.max(axis=1, keepdims=True)).sum(axis=1) > 1).sum())


def max_abs_dlogit(logits: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(logits.astype(np.float64) - reference).max())


@dataclass(frozen=True)
class Scores:
    top1_pct: float | None
    top5_pct: float | None
    agreement_pct: float
    max_abs_dlogit: float
    tied_top1_rows: int = 0


def score(logits: np.ndarray, reference: np.ndarray, labels) -> Scores:
    labelled = labels is not None
    return Scores(topk_pct(logits, labels, 1) if labelled else None,
                  topk_pct(logits, labels, 5) if labelled else None,
                  agreement_pct(logits, reference), max_abs_dlogit(logits, reference),
                  tied_top1_rows(logits))


def gate(scores: Scores, reference_top1_pct: float | None) -> tuple[str, str]:
    """(status, reason) of the correctness gate; the drop is only judged with labels."""
    drop = (reference_top1_pct - scores.top1_pct
            if scores.top1_pct is not None and reference_top1_pct is not None else None)
    facts = f"agreement {scores.agreement_pct:.1f}%" + (f", top-1 {-drop:+.1f} pts" if drop is not None else "")
    if scores.agreement_pct < FAILED_MIN_AGREEMENT_PCT or (drop is not None and drop > FAILED_MAX_TOP1_DROP):
        return FAILED, f"{facts} (needs >= {FAILED_MIN_AGREEMENT_PCT:.0f}% and a drop <= {FAILED_MAX_TOP1_DROP:.0f} pts)"
    if scores.agreement_pct < DEGRADED_MIN_AGREEMENT_PCT or (drop is not None and drop > DEGRADED_MAX_TOP1_DROP):
        return DEGRADED, f"{facts} (below {DEGRADED_MIN_AGREEMENT_PCT:.0f}% or more than {DEGRADED_MAX_TOP1_DROP:.0f} pts down)"
    return OK, facts


def fp32_parity(logits: np.ndarray, reference: np.ndarray) -> tuple[bool, str]:
    """An FP32 conversion is kept only if it matches eager: same top-1, max |Δlogit| <= 1e-3."""
    same_top1 = agreement_pct(logits, reference)
    delta = max_abs_dlogit(logits, reference)
    facts = f"top-1 agreement {same_top1:.1f}%, max |Δlogit| {delta:.2e}"
    return same_top1 == 100.0 and delta <= FP32_MAX_ABS_DLOGIT, facts
