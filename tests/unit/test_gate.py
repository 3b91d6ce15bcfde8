"""promote's gate on hand-made metrics: champion, baseline, parity and latency checks."""

from __future__ import annotations

from training.promote import Check, decide, quality_checks

GATE = {"min_pr_auc_gain": 0.01, "max_gap_to_baseline": 0.02, "max_batch1_p99_us": 2000}
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


# --- against a real MLflow server, Postgres and a DVC repository ---------------------------
