"""The label watch DAG: its integrity, and real Airflow emitting one asset event per batch
of labels."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from jobs.common import FEEDBACK_ASSET_URI
from tests.helpers.labelled_db import labelled_database


@pytest.fixture(scope="module")
def seeded_url(postgres_server_url):
    with labelled_database(postgres_server_url) as seeded:
        yield seeded


# --- label watch: when have enough new labels arrived to retrain? --------------------------


def test_the_label_watch_dag_emits_the_feedback_asset(project_root, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(project_root / "dags" / "fraud_label_watch.py"))
    assert bag.import_errors == {}
    dag = bag.dags["fraud_label_watch"]
    assert (dag.catchup, dag.max_active_runs) == (False, 1)
    assert {"fraudops", "feedback"} <= set(dag.tags)
    [task] = dag.tasks
    assert task.retries == 2
    assert [a.uri for a in task.outlets] == [FEEDBACK_ASSET_URI]


def airflow(home, command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """The real airflow CLI against a private home (SQLite metadata, this file's DAG only)."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), *command],
        env={**env, "AIRFLOW_HOME": str(home)},
        cwd=home,
        capture_output=True,
        text=True,
        timeout=600,
    )


def asset_events(home) -> list[dict]:
    with closing(sqlite3.connect(home / "airflow.db")) as conn:
        rows = conn.execute(
            "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id"
            " WHERE a.uri = ? ORDER BY e.id",
            (FEEDBACK_ASSET_URI,),
        ).fetchall()
    return [json.loads(extra) for (extra,) in rows]


@pytest.mark.slow
def test_airflow_runs_the_watch_and_emits_one_event_per_batch_of_labels(
    seeded_url, tmp_path, project_root
):
    """`airflow dags test` twice: 3 labels >= threshold 3 emit an event whose extra says
    so; the second run finds nothing newer than that event and is skipped, emitting none."""
    url, _ = seeded_url
    home, project = tmp_path / "airflow", tmp_path / "project"
    (home / "dags").mkdir(parents=True)
    project.mkdir()
    shutil.copy(project_root / "dags" / "fraud_label_watch.py", home / "dags")
    (project / "params.yaml").write_text("label_watch:\n  min_new_labels: 3\n")
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "FRAUDOPS_PROJECT_DIR": str(project),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    migrated = airflow(home, ["db", "migrate"], env)
    assert migrated.returncode == 0, migrated.stderr[-3000:]

    first = airflow(home, ["dags", "test", "fraud_label_watch"], env)
    assert first.returncode == 0, first.stderr[-3000:]
    [event] = asset_events(home)
    assert (event["count"], event["min_new_labels"]) == (3, 3)
    assert event["window_end"]

    second = airflow(home, ["dags", "test", "fraud_label_watch"], env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "not enough new labels yet" in second.stdout + second.stderr
    assert len(asset_events(home)) == 1
