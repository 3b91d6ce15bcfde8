"""The drift watch DAG: its integrity, the training DAG's schedule on the drift asset, and
real Airflow emitting the asset after K drifted windows and queuing a fraud_training run."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing

import pytest
import yaml

from jobs.common import DRIFT_ASSET_URI, FEEDBACK_ASSET_URI
from testkit import drift_traffic as traffic
from testkit.transactions import START
from tests.helpers.airflow_home import AirflowHome, load_dag

DAGS = ("fraud_drift_watch", "fraud_training")
SHIFT_DAY = 8
# Scored rows land after the DAG's start date: Airflow runs no task before it.
DELAY = int(traffic.window_end(0).replace(year=2026, month=6).timestamp()) - START


def test_the_drift_watch_dag_is_thin_and_emits_the_drift_asset(project_root, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    dag = load_dag(project_root, "fraud_drift_watch")
    assert (dag.catchup, dag.max_active_runs) == (False, 1)
    assert {"fraudops", "monitoring"} <= set(dag.tags)
    assert dag.doc_md
    assert all(t.retries == 2 for t in dag.tasks)
    outlets = {t.task_id: [a.uri for a in t.outlets] for t in dag.tasks}
    assert outlets == {"watch_window": [], "announce_drift": [DRIFT_ASSET_URI]}


def test_training_runs_on_its_cron_on_labels_or_on_drift(project_root, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    dag = load_dag(project_root, "fraud_training")
    condition = dag.timetable.asset_condition
    assert type(condition).__name__ == "AssetAny"  # either asset alone starts a run
    assert {a.uri for a in condition.objects} == {FEEDBACK_ASSET_URI, DRIFT_ASSET_URI}
    for task in dag.tasks:
        assert "FRAUDOPS_TRAINING_TRIGGER" in task.env and task.append_env


def _queued(home) -> list[str]:
    with closing(sqlite3.connect(home / "airflow.db")) as conn:
        rows = conn.execute("SELECT target_dag_id FROM asset_dag_run_queue").fetchall()
    return [r[0] for r in rows]


@pytest.mark.slow
def test_airflow_emits_the_drift_asset_and_queues_training(
    postgres_server_url, project_root, tmp_path
):
    """Two hourly runs over TRANSFER amounts times five, K = 2: the first window is drifted
    but skipped, the second completes the run, emits the asset and queues fraud_training."""
    home, project = tmp_path / "airflow", tmp_path / "project"
    project.mkdir()
    shutil.copy(project_root / "dvc.yaml", project)
    params = yaml.safe_load((project_root / "params.yaml").read_text())
    params["monitoring"].update(window_minutes=720, consecutive_windows=2)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    spec = traffic.publish_reference_model(project / "models" / "serving", "v1", 200_000, 1)
    live = traffic.shift(traffic.live_stream(200_000, seed=2), "amount_x5",
                         START + SHIFT_DAY * traffic.DAY)  # fmt: skip
    live = live[live["timestamp"] < START + (SHIFT_DAY + 1) * traffic.DAY]
    with traffic.seeded_database(
        postgres_server_url, traffic.scored_rows(live, spec, DELAY)
    ) as url:
        dags = [project_root / "dags" / f"{name}.py" for name in DAGS]
        # Airflow queues runs only for unpaused consumers of an asset.
        airflow = AirflowHome(home, dags, DATABASE_URL=url, FRAUDOPS_PROJECT_DIR=str(project),
                              AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False")  # fmt: skip
        airflow.run("dags", "reserialize")
        ends = [traffic.window_end(SHIFT_DAY + d, DELAY).isoformat() for d in (0.5, 1.0)]
        first = airflow.run("dags", "test", "fraud_drift_watch", ends[0])
        assert "no alarm: 1 drifted window(s) in a row" in first
        assert airflow.asset_events(DRIFT_ASSET_URI) == []
        airflow.run("dags", "test", "fraud_drift_watch", ends[1])
    assert len(airflow.asset_events(DRIFT_ASSET_URI)) == 1
    assert _queued(home) == ["fraud_training"]
    assert sorted((project / "reports" / "drift").glob("*.html"))


def test_the_trigger_names_the_assets_or_the_run_type(project_root, tmp_path, monkeypatch):
    """The template behind FRAUDOPS_TRAINING_TRIGGER, rendered as Airflow renders it: the
    triggering events' mapping iterates over their assets."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    from airflow.utils.types import DagRunType
    from jinja2 import Template

    from dags.fraud_training import DRIFT, FEEDBACK_LABELS, TRIGGER

    class Run:
        run_type = DagRunType.ASSET_TRIGGERED

    both = {DRIFT: [object()], FEEDBACK_LABELS: [object()]}
    assert Template(TRIGGER).render(triggering_asset_events=both, dag_run=Run) == (
        f"{FEEDBACK_ASSET_URI},{DRIFT_ASSET_URI}"
    )
    Run.run_type = DagRunType.SCHEDULED
    assert Template(TRIGGER).render(triggering_asset_events={}, dag_run=Run) == "scheduled"
