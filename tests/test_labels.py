"""serving.labels: validation, upsert with supersede, and the audit trail (real Postgres)."""

from __future__ import annotations

import uuid

import psycopg2
import pytest

from serving import db
from serving.labels import LabelError, UnknownTransaction, label_name, record_label, validate_label

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def database_url():
    """A fresh, migrated database (local stand-in until tests/conftest.py provides one)."""
    server = "postgresql://fraudops@127.0.0.1:55432/fraudops"
    name = f"test_labels_{uuid.uuid4().hex[:8]}"
    url = db.create_database(server, name)
    db.migrate(url)
    yield url
    db.drop_database(server, name)


@pytest.fixture(scope="module")
def conn(database_url):
    connection = db.connect(database_url)
    yield connection
    connection.close()


def scored(conn, band: str = "ALLOW", score: float = 0.1) -> str:
    """Insert one scored transaction and return its id."""
    tx_id = f"tx-{uuid.uuid4().hex[:12]}"
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO scored_transactions (transaction_id, user_id, event_ts, type, amount,"
            " score, band, model_version, source) VALUES (%s, 7, 1700000000, 'TRANSFER', 10.0,"
            " %s, %s, 'v1', 'inline')",
            (tx_id, score, band),
        )
    return tx_id


def audit_rows(conn, tx_id: str) -> list[dict]:
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT detail FROM audit_log WHERE kind = 'label' AND subject = %s ORDER BY id",
            (tx_id,),
        )
        return [row[0] for row in cur.fetchall()]


def stored(conn, tx_id: str) -> tuple:
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT label, source, note, supersedes FROM feedback_labels WHERE transaction_id = %s",
            (tx_id,),
        )
        return cur.fetchone()


def test_a_label_is_stored_and_audited(conn):
    tx_id = scored(conn)
    result = record_label(conn, tx_id, "FRAUD", "analyst:alice", "card reported stolen")
    assert (result.label, result.superseded, result.previous) == ("FRAUD", False, None)
    assert stored(conn, tx_id) == ("FRAUD", "analyst:alice", "card reported stolen", None)
    [audit] = audit_rows(conn, tx_id)
    assert (audit["source"], audit["old"], audit["new"]) == ("analyst:alice", None, "FRAUD")
    assert audit["labelled_at"]


def test_a_later_label_supersedes_and_both_stay_in_the_audit_log(conn):
    tx_id = scored(conn)
    record_label(conn, tx_id, "FRAUD", "analyst:alice")
    result = record_label(conn, tx_id, "LEGIT", "chargeback:visa", "reversed")
    assert (result.superseded, result.previous) == (True, "FRAUD")
    assert stored(conn, tx_id) == ("LEGIT", "chargeback:visa", "reversed", "FRAUD")
    trail = [(a["source"], a["old"], a["new"]) for a in audit_rows(conn, tx_id)]
    assert trail == [("analyst:alice", None, "FRAUD"), ("chargeback:visa", "FRAUD", "LEGIT")]


def test_the_same_verdict_again_changes_nothing(conn):
    tx_id = scored(conn)
    record_label(conn, tx_id, "FRAUD", "chargeback:visa")
    again = record_label(conn, tx_id, "FRAUD", "chargeback:visa")
    assert (again.changed, again.superseded) == (False, False)
    assert len(audit_rows(conn, tx_id)) == 1


def test_an_unknown_transaction_is_refused_and_nothing_is_written(conn):
    with pytest.raises(UnknownTransaction) as err:
        record_label(conn, "never-scored", "FRAUD", "analyst:alice")
    assert err.value.field == "transaction_id"
    assert "unknown transaction" in str(err.value)
    assert stored(conn, "never-scored") is None
    assert audit_rows(conn, "never-scored") == []


def test_an_autocommit_connection_still_writes_label_and_audit_together(database_url):
    connection = db.connect(database_url)
    connection.autocommit = True
    try:
        tx_id = scored(connection)
        record_label(connection, tx_id, "LEGIT", "analyst:bob")
        assert connection.autocommit
        assert stored(connection, tx_id)[0] == "LEGIT"
        assert len(audit_rows(connection, tx_id)) == 1
    finally:
        connection.close()


def test_a_failed_audit_write_rolls_the_label_back(conn, database_url):
    """Label and audit row commit together: with audit_log unwritable, no label lands."""
    tx_id = scored(conn)
    other = db.connect(database_url)
    try:
        with other.cursor() as cur:  # hold a lock that makes the audit insert time out
            cur.execute("LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE")
        with conn.cursor() as cur:  # rolled back with the failed label, so it does not linger
            cur.execute("SET LOCAL lock_timeout = '200ms'")
        with pytest.raises(psycopg2.errors.LockNotAvailable):
            record_label(conn, tx_id, "FRAUD", "analyst:alice")
    finally:
        other.rollback()
        other.close()
    assert stored(conn, tx_id) is None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        (("", "FRAUD", "analyst:a", ""), "transaction_id"),
        (("x" * 65, "FRAUD", "analyst:a", ""), "transaction_id"),
        (("tx-1", "MAYBE", "analyst:a", ""), "label"),
        (("tx-1", 0, "analyst:a", ""), "label"),
        (("tx-1", None, "analyst:a", ""), "label"),
        (("tx-1", "FRAUD", "", ""), "source"),
        (("tx-1", "FRAUD", "   ", ""), "source"),
        (("tx-1", "FRAUD", "s" * 65, ""), "source"),
        (("tx-1", "FRAUD", "analyst:a", "n" * 513), "note"),
        (("tx-1", "FRAUD", "analyst:a", None), "note"),
    ],
)
def test_invalid_fields_are_named(fields, field):
    with pytest.raises(LabelError) as err:
        validate_label(*fields)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")


def test_invalid_label_is_refused_before_the_database(conn):
    tx_id = scored(conn)
    with pytest.raises(LabelError) as err:
        record_label(conn, tx_id, "maybe", "analyst:alice")
    assert err.value.field == "label"
    assert stored(conn, tx_id) is None


def test_label_names_from_the_proto_enum_and_text():
    assert [label_name(v) for v in (1, 2, 0, " fraud ", "LEGIT")] == [
        "FRAUD",
        "LEGIT",
        "",
        "FRAUD",
        "LEGIT",
    ]
