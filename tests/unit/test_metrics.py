"""training.lib.metrics on hand-made scores: thresholds at a false-positive rate, summaries,
bands, the PR curve."""

from __future__ import annotations

import numpy as np
import pytest

from training.lib import metrics


@pytest.mark.parametrize("fpr", [0.0, 0.001, 0.01, 0.1, 0.5])
def test_threshold_at_fpr_bounds_the_false_positive_rate(fpr):
    rng = np.random.default_rng(0)
    labels = (rng.random(5000) < 0.05).astype(np.int8)
    scores = np.round(rng.random(5000) * 0.5 + labels * 0.3, 3)  # ties on purpose
    t = metrics.threshold_at_fpr(labels, scores, fpr)
    assert (scores[labels == 0] >= t).mean() <= fpr
    assert 0.0 <= t <= 1.0


def test_threshold_sits_between_scores_not_on_them():
    labels = np.array([0, 0, 0, 0, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.9])
    assert metrics.threshold_at_fpr(labels, scores, 0.0) == pytest.approx(0.65)
    assert metrics.threshold_at_fpr(labels, scores, 0.25) == pytest.approx(0.35)  # 1 of 4
    assert metrics.threshold_at_fpr(labels, scores, 0.5) == pytest.approx(0.25)


def test_summary_on_a_perfect_ranking_and_on_one_class():
    labels = np.array([0] * 98 + [1, 1])
    scores = np.linspace(0, 1, 100)
    thresholds = metrics.calibrate_thresholds(labels, scores, 0.01, 0.0)
    perfect = metrics.summarize(labels, scores, thresholds)
    assert perfect["pr_auc"] == perfect["roc_auc"] == perfect["recall_at_fpr"] == 1.0
    assert perfect["bands"]["BLOCK"] == {"rows": 2, "frauds": 2, "precision": 1.0, "recall": 1.0}
    one_class = metrics.summarize(np.zeros(5, dtype=np.int8), scores[:5], thresholds)
    assert one_class["pr_auc"] is None and one_class["recall_at_fpr"] is None
    assert "valid_pr_auc" not in metrics.flat_metrics(one_class, "valid")


def test_band_metrics_partition_the_rows():
    rng = np.random.default_rng(1)
    labels = (rng.random(1000) < 0.1).astype(np.int8)
    scores = rng.random(1000)
    bands = metrics.band_metrics(labels, scores, {"challenge": 0.5, "block": 0.9})
    assert sum(bands[b]["rows"] for b in ("ALLOW", "CHALLENGE", "BLOCK")) == 1000
    assert sum(bands[b]["frauds"] for b in ("ALLOW", "CHALLENGE", "BLOCK")) == labels.sum()
    assert bands["FLAGGED"]["rows"] == bands["CHALLENGE"]["rows"] + bands["BLOCK"]["rows"]


def test_interpolated_precision_never_rises_with_recall():
    rng = np.random.default_rng(2)
    labels = (rng.random(2000) < 0.05).astype(np.int8)
    precision = metrics.interpolated_precision(labels, rng.random(2000) + labels * 0.5)
    assert len(precision) == len(metrics.RECALL_GRID)
    assert np.all(np.diff(precision) <= 1e-12)


def test_precision_at_k_counts_frauds_among_the_top_k():
    labels = np.array([0, 1, 0, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.1, 0.0])
    assert metrics.precision_at_k(labels, scores, 2) == 0.5
    assert metrics.precision_at_k(labels, scores, 4) == 0.5
    assert metrics.precision_at_k(labels, scores, 100) == 2 / 6  # fewer rows than k
    assert metrics.precision_at_k(labels[:0], scores[:0], 2) is None


def test_alert_precision_is_per_day_then_averaged():
    day = metrics.DAY_SECONDS
    # day 0: the top-2 are both fraud; day 1: the top-2 hold one fraud
    labels = np.array([1, 1, 0, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.1, 0.9, 0.5, 0.4])
    timestamps = np.array([0, 10, 20, day, day + 1, day + 2])
    assert metrics.daily_precision_at_k(labels, scores, timestamps, 2) == {0: 1.0, 1: 0.5}
    assert metrics.mean_daily_precision_at_k(labels, scores, timestamps, 2) == 0.75
    summary = metrics.summarize(
        labels, scores, {"challenge": 0.5, "block": 0.8}, 0.1, timestamps, 2
    )
    assert (summary["p_at_k"], summary["k"]) == (0.75, 2)
    assert metrics.flat_metrics(summary, "test")["test_p_at_k"] == 0.75
    assert "p_at_k" not in metrics.summarize(labels, scores, {"challenge": 0.5, "block": 0.8})
