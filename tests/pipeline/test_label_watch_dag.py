"""The label watch DAG: its integrity, and real Airflow emitting one asset event per batch
of labels."""

from __future__ import annotations

import pytest

from jobs.common import FEEDBACK_ASSET_URI
from tests.helpers.airflow_home import AirflowHome, load_dag
from tests.helpers.labelled_db import labelled_database


@pytest.fixture(scope="module")
def seeded_url(postgres_server_url):
    with labelled_database(postgres_server_url) as seeded:
        yield seeded


# --- label watch: when have enough new labels arrived to retrain? --------------------------


def test_the_label_watch_dag_emits_the_feedback_asset(project_root, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    dag = load_dag(project_root, "fraud_label_watch")
    assert (dag.catchup, dag.max_active_runs) == (False, 1)
    assert {"fraudops", "feedback"} <= set(dag.tags)
    [task] = dag.tasks
    assert task.retries == 2
    assert [a.uri for a in task.outlets] == [FEEDBACK_ASSET_URI]


@pytest.mark.slow
def test_airflow_runs_the_watch_and_emits_one_event_per_batch_of_labels(
    seeded_url, tmp_path, project_root
):
    """`airflow dags test` twice: 3 labels >= threshold 3 emit an event whose extra says
    so; the second run finds nothing newer than that event and is skipped, emitting none."""
    url, _ = seeded_url
    project = tmp_path / "project"
    project.mkdir()
    (project / "params.yaml").write_text("label_watch:\n  min_new_labels: 3\n")
    airflow = AirflowHome(tmp_path / "airflow", [project_root / "dags" / "fraud_label_watch.py"],
                          DATABASE_URL=url, FRAUDOPS_PROJECT_DIR=str(project))  # fmt: skip

    airflow.run("dags", "test", "fraud_label_watch")
    [event] = airflow.asset_events(FEEDBACK_ASSET_URI)
    assert (event["count"], event["min_new_labels"]) == (3, 3)
    assert event["window_end"]

    second = airflow.run("dags", "test", "fraud_label_watch")
    assert "not enough new labels yet" in second
    assert len(airflow.asset_events(FEEDBACK_ASSET_URI)) == 1
