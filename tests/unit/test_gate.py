"""promote's gate on hand-made metrics: champion, baseline, parity and latency checks."""

from __future__ import annotations

import pytest

from training.promote import Check, decide, quality_checks, recent_check

GATE = {
    "min_pr_auc_gain": 0.01,
    "max_gap_to_baseline": 0.02,
    "max_batch1_p99_us": 2000,
    "max_recent_drop": 0.0,
    "min_recent_frauds": 5,
}
EXPORT_OK = {
    "parity": {"passed": True, "max_abs_diff": 1e-7, "tolerance": 1e-5},
    "latency": {"tflite": {"batch1_p99_us": 40.0}},
}


def metrics(candidate: float, baseline: float, champion: float | None = None) -> dict:
    found = {"candidate": {"pr_auc": candidate}, "baseline": {"pr_auc": baseline}}
    if champion is not None:
        found["champion"] = {"pr_auc": champion, "version": "v1"}
    return found


def failed(checks: list[Check]) -> set[str]:
    return {c.name for c in checks if not c.passed}


def test_no_champion_passes_when_near_the_baseline():
    assert failed(quality_checks(metrics(0.80, 0.81), GATE)) == set()


def test_must_beat_the_champion_by_the_minimum_gain():
    assert failed(quality_checks(metrics(0.805, 0.80, champion=0.80), GATE)) == {"beats_champion"}
    assert failed(quality_checks(metrics(0.81, 0.80, champion=0.80), GATE)) == set()


def test_far_below_the_baseline_fails_even_without_a_champion():
    assert failed(quality_checks(metrics(0.70, 0.80), GATE)) == {"near_baseline"}


def test_parity_and_latency_are_gated():
    slow = {**EXPORT_OK, "latency": {"tflite": {"batch1_p99_us": 5000.0}}}
    broken = {**EXPORT_OK, "parity": {"passed": False, "max_abs_diff": 0.1, "tolerance": 1e-5}}
    assert failed(decide(EXPORT_OK, metrics(0.8, 0.8), GATE)) == set()
    assert failed(decide(slow, metrics(0.8, 0.8), GATE)) == {"latency"}
    assert failed(decide(broken, metrics(0.8, 0.8), GATE)) == {"parity"}


def with_recent(found: dict, candidate: tuple, champion: tuple | None, frauds: int = 40) -> dict:
    """Metrics with a recent window: (PR-AUC, P@k) of the candidate and of the champion."""
    recent = {"rows": 900, "frauds": frauds, "champion": None}
    recent["candidate"] = {"pr_auc": candidate[0], "p_at_k": candidate[1]}
    if champion is not None:
        recent["champion"] = {"pr_auc": champion[0], "p_at_k": champion[1], "version": "v1"}
    return {**found, "recent": recent}


def test_better_on_the_test_set_but_worse_on_fresh_traffic_is_not_promoted():
    # the case: v2 wins on the synthetic test set, loses on the newest live labels
    found = with_recent(metrics(0.85, 0.84, champion=0.80), (0.544, 0.60), (0.624, 0.70))
    assert failed(decide(EXPORT_OK, found, GATE)) == {"recent_not_worse"}
    check = recent_check(found, GATE)
    assert "PR-AUC 0.5440 vs champion 0.6240" in check.detail and "P@k 0.6000" in check.detail


def test_worse_on_alert_precision_alone_fails_the_recent_check():
    found = with_recent(metrics(0.85, 0.84, champion=0.80), (0.70, 0.55), (0.62, 0.60))
    assert failed(decide(EXPORT_OK, found, GATE)) == {"recent_not_worse"}


def test_better_on_both_windows_is_promoted():
    found = with_recent(metrics(0.85, 0.84, champion=0.80), (0.70, 0.72), (0.62, 0.70))
    assert failed(decide(EXPORT_OK, found, GATE)) == set()


def test_a_tolerated_drop_on_the_recent_window_passes():
    found = with_recent(metrics(0.85, 0.84, champion=0.80), (0.61, 0.69), (0.62, 0.70))
    assert recent_check(found, {**GATE, "max_recent_drop": 0.02}).passed


@pytest.mark.parametrize(
    ("found", "why"),
    [
        (metrics(0.85, 0.84, champion=0.80), "no recent labelled window"),
        (with_recent(metrics(0.85, 0.84), (0.5, 0.5), None), "no champion"),
        (with_recent(metrics(0.85, 0.84, 0.80), (0.1, 0.1), (0.9, 0.9), frauds=3), "3 frauds"),
    ],
)
def test_nothing_to_compare_on_the_recent_window_passes_and_says_why(found, why):
    check = recent_check(found, GATE)
    assert check.passed and why in check.detail


# --- against a real MLflow server, Postgres and a DVC repository ---------------------------
