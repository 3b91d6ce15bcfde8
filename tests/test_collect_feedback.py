"""collect_feedback (labels joined with the transactions as scored, deterministically) and
the label watch that decides when enough new labels call for retraining."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fraudops.features import FEATURE_NAMES
from fraudops.schema import TRANSACTION_COLUMNS
from serving import db
from serving.labels import record_label
from training.collect_feedback import FEEDBACK_COLUMNS, SCHEMA, collect_feedback, window_bounds
from training.label_watch import FEEDBACK_ASSET_URI, check_new_labels, watermark

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


def digest_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.integration
def test_exports_the_labelled_transactions_as_scored(seeded_url, tmp_path):
    url, _ = seeded_url
    summary = collect_feedback(url, tmp_path / "labels.parquet", tmp_path / "fb.json", 90)
    table = pq.read_table(tmp_path / "labels.parquet")
    assert table.schema.equals(SCHEMA)
    assert tuple(table.column_names[: len(TRANSACTION_COLUMNS)]) == TRANSACTION_COLUMNS
    rows = table.to_pylist()
    assert [r["transaction_id"] for r in rows] == ["tx-a", "tx-b", "tx-c"]  # by timestamp
    assert [r["is_fraud"] for r in rows] == [0, 1, 1]
    assert [(r["score"], r["band"], r["model_version"]) for r in rows] == [
        (0.02, "ALLOW", "v1"),
        (0.40, "CHALLENGE", "v2"),
        (0.91, "BLOCK", "v1"),
    ]
    assert [r["label_source"] for r in rows] == ["analyst:alice", "analyst:bob", "chargeback:visa"]
    assert rows[0]["dest_id"] == 0  # unknown destination
    assert rows[2]["new_balance_orig"] == 100.0
    assert summary == json.loads((tmp_path / "fb.json").read_text())
    assert (summary["count"], summary["fraud"], summary["legit"]) == (3, 2, 1)
    assert summary["window_end"] == max(r["labelled_at"] for r in rows).isoformat()


@pytest.mark.integration
def test_same_labels_give_byte_identical_files_and_a_new_label_changes_them(seeded_url, tmp_path):
    url, conn = seeded_url
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):
        collect_feedback(url, out / "labels.parquet", out / "fb.json", 90)
    assert digest_of(first / "labels.parquet") == digest_of(second / "labels.parquet")
    assert digest_of(first / "fb.json") == digest_of(second / "fb.json")

    record_label(conn, "tx-d", "LEGIT", "analyst:carol")
    try:
        collect_feedback(url, second / "labels.parquet", second / "fb.json", 90)
        assert digest_of(first / "labels.parquet") != digest_of(second / "labels.parquet")
        assert pq.read_metadata(second / "labels.parquet").num_rows == 4
    finally:
        with conn, conn.cursor() as cur:
            cur.execute("DELETE FROM feedback_labels WHERE transaction_id = 'tx-d'")


@pytest.mark.integration
def test_labels_outside_the_window_are_left_out(seeded_url, tmp_path):
    url, _ = seeded_url
    later = datetime.now(UTC) + timedelta(days=10)
    summary = collect_feedback(url, tmp_path / "l.parquet", tmp_path / "f.json", 5, as_of=later)
    assert summary["count"] == 0
    summary = collect_feedback(url, tmp_path / "l.parquet", tmp_path / "f.json", 0, as_of=later)
    assert summary["count"] == 3


def test_window_bounds():
    as_of = datetime(2026, 3, 10, tzinfo=UTC)
    assert window_bounds(7, as_of) == (datetime(2026, 3, 3, tzinfo=UTC), as_of)
    assert window_bounds(0, as_of)[0].year == 1970
    with pytest.raises(ValueError, match="window_days"):
        window_bounds(-1, as_of)


def test_without_a_database_the_cli_writes_an_empty_file_with_the_schema(tmp_path):
    (tmp_path / "params.yaml").write_text("collect_feedback:\n  window_days: 30\n")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    out, report = tmp_path / "data" / "labels.parquet", tmp_path / "reports" / "feedback.json"
    command = [sys.executable, "-m", "training.collect_feedback", "--out", str(out)]
    command += ["--report", str(report), "--params", str(tmp_path / "params.yaml")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "DATABASE_URL is not set" in result.stderr
    table = pq.read_table(out)
    assert table.num_rows == 0
    assert table.schema.equals(SCHEMA)
    assert tuple(table.column_names) == FEEDBACK_COLUMNS
    assert json.loads(report.read_text()) == {
        "count": 0,
        "fraud": 0,
        "legit": 0,
        "source": "none",
        "window_days": 30,
        "window_end": None,
        "window_start": None,
    }


# --- label watch: when have enough new labels arrived to retrain? --------------------------


def publish_spec(serving_root, version: str, published_at: str, window_end: str | None) -> None:
    """A published model directory as far as the watch reads it: its model.json."""
    spec = {
        "version": version,
        "mlflow_run_id": "r",
        "data_hash": "h",
        "feature_names": list(FEATURE_NAMES),
        "thresholds": {"challenge": 0.5, "block": 0.9},
        "metrics": {},
        "golden": {"inputs": [[0.0] * len(FEATURE_NAMES)], "outputs": [0.1]},
        "explain": {},
        "published_at": published_at,
        "labels": {"count": 3, "window_start": None, "window_end": window_end},
    }
    (serving_root / version).mkdir(parents=True)
    (serving_root / version / "model.json").write_text(json.dumps(spec))


def test_the_watermark_is_the_later_of_the_served_model_and_the_last_event(tmp_path):
    assert watermark(tmp_path / "none", None) is None
    publish_spec(tmp_path, "v1", "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00")
    publish_spec(tmp_path, "v2", "2026-02-01T00:00:00+00:00", "2026-01-31T10:00:00+00:00")
    assert watermark(tmp_path, None) == datetime(2026, 1, 31, 10, tzinfo=UTC)
    older = {"window_end": "2026-01-20T00:00:00+00:00"}
    newer = {"window_end": "2026-02-02T00:00:00+00:00"}
    assert watermark(tmp_path, older) == datetime(2026, 1, 31, 10, tzinfo=UTC)
    assert watermark(tmp_path, newer) == datetime(2026, 2, 2, tzinfo=UTC)


@pytest.mark.integration
def test_new_labels_are_counted_after_the_watermark(seeded_url, tmp_path):
    url, _ = seeded_url
    extra = check_new_labels(url, tmp_path, None, min_new_labels=3)
    assert extra["count"] == 3
    assert extra["since"] is None
    assert extra["window_start"] <= extra["window_end"]
    assert check_new_labels(url, tmp_path, None, min_new_labels=4) is None
    assert check_new_labels(url, tmp_path, extra, min_new_labels=1) is None  # nothing newer
    assert check_new_labels(None, tmp_path, None, min_new_labels=1) is None


@pytest.mark.pipeline
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


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.pipeline
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
