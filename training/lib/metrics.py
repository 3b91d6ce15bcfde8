"""Metrics for imbalanced fraud scoring, shared by train (validation, threshold calibration)
and evaluate (held-out and feedback sets).

Accuracy means nothing at 0.1-1% fraud, so everything here is about ranking and about the
operating points the bands use: PR-AUC (average precision), recall at a fixed false-positive
rate, precision/recall of each risk band, and alert precision P@k: the fraud share among the
k highest-scored transactions of each day, the k alerts investigators can check (the
number a fraud team is judged on). Thresholds are set by false-positive rate on
legitimate traffic because that is what an operator budgets (challenged or blocked customers).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from fraudops.bands import ALLOW, BANDS, BLOCK, CHALLENGE, bands_for

RECALL_GRID = np.linspace(0.0, 1.0, 101)
DAY_SECONDS = 86_400


def _both_classes(labels: np.ndarray) -> bool:
    return 0 < int(labels.sum()) < len(labels)


def threshold_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """The threshold letting through at most `fpr` of legitimate rows (bands flag `>= t`).

    With k = floor(fpr * n_legit), t lies above the (k+1)-th highest legitimate score, midway
    to the next higher score of any row: the flagged set on this data is the same as with
    the tightest choice, and a float32 wobble in a re-scored row (another batch size, the
    TFLite export) does not tip a legitimate row over the line."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    legit = np.sort(scores[labels == 0])[::-1]
    if len(legit) == 0:
        raise ValueError("threshold_at_fpr: no legitimate rows to calibrate on")
    k = int(np.floor(fpr * len(legit)))
    if k >= len(legit):
        return 0.0
    above = scores[scores > legit[k]]
    if len(above) == 0:
        return float(min(np.nextafter(legit[k], np.inf), 1.0))
    return float((legit[k] + above.min()) / 2.0)


def calibrate_thresholds(
    labels: np.ndarray, scores: np.ndarray, challenge_fpr: float, block_fpr: float
) -> dict[str, float]:
    """Band thresholds from target false-positive rates (block is the stricter one)."""
    if not 0.0 <= block_fpr <= challenge_fpr <= 1.0:
        raise ValueError(f"need 0 <= block_fpr ({block_fpr}) <= challenge_fpr ({challenge_fpr})")
    return {
        "challenge": threshold_at_fpr(labels, scores, challenge_fpr),
        "block": threshold_at_fpr(labels, scores, block_fpr),
    }


def recall_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float) -> float | None:
    """Share of frauds caught when the threshold lets through `fpr` of legitimate rows."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    if not _both_classes(labels):
        return None
    t = threshold_at_fpr(labels, scores, fpr)
    return float((scores[labels == 1] >= t).mean())


def band_metrics(
    labels: np.ndarray, scores: np.ndarray, thresholds: dict[str, float]
) -> dict[str, dict[str, Any]]:
    """Per band: rows, frauds, precision (fraud share in the band) and recall (share of all
    frauds landing in it); `FLAGGED` is CHALLENGE and BLOCK together."""
    labels = np.asarray(labels)
    band = bands_for(scores, thresholds)
    n_fraud = int(labels.sum())
    groups = {name: band == i for i, name in enumerate(BANDS)}
    groups["FLAGGED"] = band >= 1
    out = {}
    for name, mask in groups.items():
        rows, frauds = int(mask.sum()), int(labels[mask].sum())
        out[name] = {
            "rows": rows,
            "frauds": frauds,
            "precision": frauds / rows if rows else None,
            "recall": frauds / n_fraud if n_fraud else None,
        }
    return out


def precision_at_k(labels: np.ndarray, scores: np.ndarray, k: int) -> float | None:
    """Fraud share among the k highest scores (all rows when there are fewer); ties on the
    score keep the rows' order, so the figure is deterministic."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if len(labels) == 0 or k <= 0:
        return None
    top = np.argsort(-scores, kind="stable")[:k]
    return float(labels[top].mean())


def daily_precision_at_k(
    labels: np.ndarray, scores: np.ndarray, timestamps: np.ndarray, k: int
) -> dict[int, float]:
    """P@k of each UTC day (day number since the epoch -> precision), each day's own top k."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    days = np.asarray(timestamps, dtype=np.int64) // DAY_SECONDS
    out = {}
    for day in np.unique(days):
        mask = days == day
        out[int(day)] = precision_at_k(labels[mask], scores[mask], k)
    return out


def mean_daily_precision_at_k(
    labels: np.ndarray, scores: np.ndarray, timestamps: np.ndarray, k: int
) -> float | None:
    """P@k averaged over the days, each day weighted alike (as the team's days are)."""
    daily = daily_precision_at_k(labels, scores, timestamps, k)
    return float(np.mean(list(daily.values()))) if daily else None


def summarize(
    labels: np.ndarray,
    scores: np.ndarray,
    thresholds: dict[str, float],
    fpr: float = 0.01,
    timestamps: np.ndarray | None = None,
    k: int | None = None,
) -> dict[str, Any]:
    """The headline numbers for one model on one labelled set (None where undefined,
    e.g. ROC-AUC on a feedback set holding only one class). With the rows' timestamps and
    the daily budget k it also holds `p_at_k`, the mean daily alert precision."""
    labels = np.asarray(labels).astype(np.int8)
    scores = np.asarray(scores, dtype=np.float64)
    both = _both_classes(labels)
    summary = {
        "rows": len(labels),
        "frauds": int(labels.sum()),
        "pr_auc": float(average_precision_score(labels, scores)) if both else None,
        "roc_auc": float(roc_auc_score(labels, scores)) if both else None,
        "recall_at_fpr": recall_at_fpr(labels, scores, fpr),
        "fpr": fpr,
        "thresholds": dict(thresholds),
        "bands": band_metrics(labels, scores, thresholds),
    }
    if timestamps is not None and k:
        summary["p_at_k"] = mean_daily_precision_at_k(labels, scores, timestamps, k)
        summary["k"] = int(k)
    return summary


def flat_metrics(summary: dict[str, Any], prefix: str) -> dict[str, float]:
    """A summary as MLflow metric names, e.g. `test_pr_auc`, `test_block_precision`.

    The same names for every model, so the MLflow UI compares runs column by column."""
    names = ("pr_auc", "roc_auc", "recall_at_fpr", "p_at_k")
    out = {f"{prefix}_{k}": summary[k] for k in names if k in summary}
    for band in (CHALLENGE, BLOCK, "FLAGGED"):
        for k in ("precision", "recall"):
            out[f"{prefix}_{band.lower()}_{k}"] = summary["bands"][band][k]
    out[f"{prefix}_{ALLOW.lower()}_rows"] = summary["bands"][ALLOW]["rows"]
    return {k: float(v) for k, v in out.items() if v is not None}


def interpolated_precision(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Precision at each recall of RECALL_GRID (best precision at that recall or more),
    so several models' PR curves share one x axis in one plot file."""
    precision, recall, _ = precision_recall_curve(labels, scores)
    order = np.argsort(recall)
    recall, precision = recall[order], precision[order]
    best_from_here = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_GRID, side="left")
    return np.where(idx < len(recall), best_from_here[np.minimum(idx, len(recall) - 1)], 0.0)
