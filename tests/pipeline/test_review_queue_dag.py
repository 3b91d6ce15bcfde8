"""The review-queue DAG: its integrity (schedule from params.yaml, retries, tags), and real
Airflow building today's queue in Postgres."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from testkit.stack import fresh_database
from tests.helpers.airflow_home import AirflowHome, load_dag
from tests.helpers.queue_day import seed_day
from tests.helpers.serving_env import query

DAG_FILE = "fraud_review_queue.py"
QUEUE_PARAMS = """queue:
  daily_budget: 12
  explore_share: 0.25
  random_share: 0.34
  seed: 2
  schedule: "{schedule}"
"""


def project_with(tmp_path: Path, schedule: str) -> Path:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    (project / "params.yaml").write_text(QUEUE_PARAMS.format(schedule=schedule))
    return project


def test_the_queue_dag_runs_on_the_params_schedule(project_root, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("FRAUDOPS_PROJECT_DIR", str(project_with(tmp_path, "7 */6 * * *")))
    dag = load_dag(project_root, "fraud_review_queue")
    assert (dag.catchup, dag.max_active_runs) == (False, 1)
    assert dag.timetable.expression == "7 */6 * * *"
    assert {"fraudops", "feedback"} <= set(dag.tags)
    assert dag.doc_md and "review queue" in dag.doc_md
    assert [(t.task_id, t.retries) for t in dag.tasks] == [("build_queue", 2)]
    assert "date" in dag.params


@pytest.mark.slow
def test_airflow_builds_todays_queue(postgres_server_url, project_root, tmp_path):
    """`airflow dags test` on a day of traffic: the run builds today's queue (k items, each
    with its reason) from scored_transactions with the policy of params.yaml."""
    today = datetime.now(UTC).date()
    with fresh_database(postgres_server_url, "queue_dag") as url:
        seed_day(url, today, 120)
        project, dag = project_with(tmp_path, "@hourly"), project_root / "dags" / DAG_FILE
        airflow = AirflowHome(tmp_path / "airflow", [dag], DATABASE_URL=url,
                              FRAUDOPS_PROJECT_DIR=str(project))  # fmt: skip
        airflow.run("dags", "test", "fraud_review_queue")
        built = query(url, "SELECT queue_date, reason, count(*) FROM review_queue"
                      " GROUP BY 1, 2 ORDER BY 1, 2")  # fmt: skip
    assert built == [
        (today, "exploit", 9),
        (today, "explore-random", 1),
        (today, "explore-threshold", 2),
    ]
