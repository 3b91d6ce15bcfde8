"""The loop benchmark, short: 3 days, one seed, tiny data, every strategy, the real stages,
a real Postgres and MLflow. What must hold whatever the numbers: each strategy's model
serves every day, the investigators label exactly the budget, and no promoted model was
worse than the champion on the recent labelled window."""

from __future__ import annotations

import pytest

from bench.loop import STRATEGIES, LoopConfig, run_loop

pytestmark = pytest.mark.slow


def test_three_days_of_the_loop(database_url, mlflow_tracking_uri, tmp_path):
    cfg = LoopConfig(
        days=3, seeds=(1,), n_users=2000, daily_budget=30, delay_days=1, tiny_model=True
    )
    result = run_loop(cfg, tmp_path / "loop", database_url, mlflow_tracking_uri)
    rows = result["rows"]
    assert {(r["day"], r["strategy"]) for r in rows} == {
        (t, s) for t in range(3) for s in STRATEGIES
    }
    assert all(0.0 <= r["p_at_k"] <= 1.0 for r in rows)
    assert {r["model"] for r in rows if r["strategy"] == "a"} == {rows[0]["model"]}
    labelled = [r for r in rows if "reviewed" in r]
    assert labelled and all(r["reviewed"] == cfg.daily_budget for r in labelled)
    assert any(r["delayed"] > 0 for r in labelled if r["strategy"] == "d")
    for r in labelled:
        recent = r["gate"]["recent"]
        if r["gate"]["decision"] == "promoted" and recent and recent["champion_pr_auc"]:
            assert recent["candidate_pr_auc"] >= recent["champion_pr_auc"]
    assert result["gate"]["promoted_worse_on_recent"] == 0
    assert set(result["gains"].index) == set(STRATEGIES) - {"a"}
    assert result["plot"].stat().st_size > 0
