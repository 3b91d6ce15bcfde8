"""Metrics for imbalanced fraud scoring, shared by train (validation, threshold calibration)
and evaluate (held-out and feedback sets).

Accuracy means nothing at 0.1-1% fraud, so everything here is about ranking and about the
operating points the bands use: PR-AUC (average precision), recall at a fixed false-positive
rate, and precision/recall of each risk band. Thresholds are set by false-positive rate on
legitimate traffic because that is what an operator budgets (challenged or blocked customers).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from fraudops.bands import ALLOW, BANDS, BLOCK, CHALLENGE, bands_for

RECALL_GRID = np.linspace(0.0, 1.0, 101)


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


def summarize(
    labels: np.ndarray, scores: np.ndarray, thresholds: dict[str, float], fpr: float = 0.01
) -> dict[str, Any]:
    """The headline numbers for one model on one labelled set (None where undefined,
    e.g. ROC-AUC on a feedback set holding only one class)."""
    labels = np.asarray(labels).astype(np.int8)
    scores = np.asarray(scores, dtype=np.float64)
    both = _both_classes(labels)
    return {
        "rows": len(labels),
        "frauds": int(labels.sum()),
        "pr_auc": float(average_precision_score(labels, scores)) if both else None,
        "roc_auc": float(roc_auc_score(labels, scores)) if both else None,
        "recall_at_fpr": recall_at_fpr(labels, scores, fpr),
        "fpr": fpr,
        "thresholds": dict(thresholds),
        "bands": band_metrics(labels, scores, thresholds),
    }


def flat_metrics(summary: dict[str, Any], prefix: str) -> dict[str, float]:
    """A summary as MLflow metric names, e.g. `test_pr_auc`, `test_block_precision`.

    The same names for every model, so the MLflow UI compares runs column by column."""
    out = {f"{prefix}_{k}": summary[k] for k in ("pr_auc", "roc_auc", "recall_at_fpr")}
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
