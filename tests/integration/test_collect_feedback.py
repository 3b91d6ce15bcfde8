"""collect_feedback and the label watch on a seeded real Postgres."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest

from fraudops.schema import TRANSACTION_COLUMNS
from jobs.label_watch import check_new_labels
from serving.labels import record_label
from tests.helpers.labelled_db import labelled_database
from training.collect_feedback import SCHEMA, collect_feedback
from training.featurize import feedback_set

FEATURIZE = {"feedback_weight": 2.0, "delayed_weight": 5.0}


@pytest.fixture(scope="module")
def seeded_url(postgres_server_url):
    with labelled_database(postgres_server_url) as seeded:
        yield seeded


def digest_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_exports_the_labelled_transactions_as_scored(seeded_url, tmp_path):
    url, _ = seeded_url
    summary = collect_feedback(url, tmp_path / "labels.parquet", tmp_path / "fb.json", 90)
    table = pq.read_table(tmp_path / "labels.parquet")
    assert table.schema.equals(SCHEMA)
    assert tuple(table.column_names[: len(TRANSACTION_COLUMNS)]) == TRANSACTION_COLUMNS
    rows = [r for r in table.to_pylist() if r["label"] is not None]
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
    assert summary["context"] == 1  # tx-d
    assert summary["window_end"] == max(r["labelled_at"] for r in rows).isoformat()


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


def test_each_label_carries_its_kind(seeded_url, tmp_path):
    url, _ = seeded_url
    collect_feedback(url, tmp_path / "labels.parquet", tmp_path / "fb.json", 90)
    rows = pq.read_table(tmp_path / "labels.parquet").to_pylist()
    kinds = {r["transaction_id"]: r["label_kind"] for r in rows}
    assert kinds == {"tx-a": "feedback", "tx-b": "feedback", "tx-c": "delayed", "tx-d": None}


def test_a_labelled_users_unlabelled_transactions_come_as_context(seeded_url, tmp_path):
    """tx-d was scored between the user's labelled transactions: the scorer counted it in
    their velocity, so it is exported, unlabelled, and featurize trains on the others only."""
    url, _ = seeded_url
    collect_feedback(url, tmp_path / "labels.parquet", tmp_path / "fb.json", 90)
    rows = {r["transaction_id"]: r for r in pq.read_table(tmp_path / "labels.parquet").to_pylist()}
    context = rows["tx-d"]
    assert (context["label"], context["label_source"], context["labelled_at"]) == (None,) * 3
    assert (context["is_fraud"], context["score"], context["band"]) == (0, 0.60, "CHALLENGE")
    features, window = feedback_set(tmp_path / "labels.parquet", FEATURIZE)
    assert sorted(features["transaction_id"]) == ["tx-a", "tx-b", "tx-c"]
    assert window["count"] == 3
    by_id = features.set_index("transaction_id")
    assert by_id.loc["tx-c", "tx_count_1h"] == 3  # tx-a, tx-b and the unlabelled tx-d


def test_an_unlabelled_transaction_counts_as_legit_only_after_the_label_delay(seeded_url, tmp_path):
    url, _ = seeded_url
    out, report = tmp_path / "l.parquet", tmp_path / "f.json"
    event_time = datetime.fromtimestamp(1_700_000_200, UTC)  # tx-d's
    before = event_time + timedelta(days=29)
    collect_feedback(url, out, report, 0, as_of=before, label_delay_days=30)
    assert "tx-d" not in pq.read_table(out).column("transaction_id").to_pylist()
    after = event_time + timedelta(days=31)
    collect_feedback(url, out, report, 0, as_of=after, label_delay_days=30)
    rows = {r["transaction_id"]: r for r in pq.read_table(out).to_pylist()}
    assert set(rows) == {"tx-d"}  # the others were labelled today, after `as_of`
    matured = rows["tx-d"]
    assert (matured["label"], matured["is_fraud"], matured["label_kind"]) == ("LEGIT", 0, "delayed")
    assert matured["label_source"] == "matured"
    assert matured["labelled_at"] == event_time + timedelta(days=30)


def test_labels_outside_the_window_are_left_out(seeded_url, tmp_path):
    url, _ = seeded_url
    later = datetime.now(UTC) + timedelta(days=10)
    summary = collect_feedback(url, tmp_path / "l.parquet", tmp_path / "f.json", 5, as_of=later)
    assert summary["count"] == 0
    summary = collect_feedback(url, tmp_path / "l.parquet", tmp_path / "f.json", 0, as_of=later)
    assert summary["count"] == 3


# --- label watch: when have enough new labels arrived to retrain? --------------------------


def test_new_labels_are_counted_after_the_watermark(seeded_url, tmp_path):
    url, _ = seeded_url
    extra = check_new_labels(url, tmp_path, None, min_new_labels=3)
    assert extra["count"] == 3
    assert extra["since"] is None
    assert extra["window_start"] <= extra["window_end"]
    assert check_new_labels(url, tmp_path, None, min_new_labels=4) is None
    assert check_new_labels(url, tmp_path, extra, min_new_labels=1) is None  # nothing newer
    assert check_new_labels(None, tmp_path, None, min_new_labels=1) is None
