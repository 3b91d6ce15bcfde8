"""The label watch DAG: its integrity, and real Airflow emitting one asset event per batch
of labels."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from contextlib import closing
from pathlib import Path

import pytest

from jobs.common import FEEDBACK_ASSET_URI
from serving import db
from serving.labels import record_label

# (id, event_ts, type, amount, dest_id, score, band, model_version, label, label source)
ROWS = [
    ("tx-c", 1_700_000_300, "TRANSFER", 900.0, 42, 0.91, "BLOCK", "v1", "FRAUD", "chargeback:visa"),
    ("tx-a", 1_700_000_100, "PAYMENT", 12.5, None, 0.02, "ALLOW", "v1", "LEGIT", "analyst:alice"),
    ("tx-b", 1_700_000_200, "CASH_OUT", 300.0, 7, 0.40, "CHALLENGE", "v2", "FRAUD", "analyst:bob"),
    ("tx-d", 1_700_000_200, "DEBIT", 5.0, 8, 0.60, "CHALLENGE", "v2", None, None),
]


@pytest.fixture(scope="module")
def seeded_url(database_url):
    """A database of this module's own, holding exactly ROWS (tx-d scored, never labelled)."""
    name = f"feedback_{uuid.uuid4().hex[:8]}"
    url = db.create_database(database_url, name)
    db.migrate(url)
    conn = db.connect(url)
    with conn, conn.cursor() as cur:
        for tx_id, ts, kind, amount, dest, score, band, version, _, _ in ROWS:
            cur.execute(
                "INSERT INTO scored_transactions (transaction_id, user_id, event_ts, type, amount,"
                " old_balance_orig, new_balance_orig, old_balance_dest, new_balance_dest,"
                " is_unauthorized_overdraft, dest_id, score, band, model_version, source)"
                " VALUES (%s, 11, %s, %s, %s, 1000, 1000 - %s, 0, %s, 0, %s, %s, %s, %s, 'stream')",
                (tx_id, ts, kind, amount, amount, amount, dest, score, band, version),
            )
    for tx_id, *_, label, source in ROWS:
        if label:
            record_label(conn, tx_id, label, source)
    yield url, conn
    conn.close()
    db.drop_database(database_url, name)


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
