"""serving.labels: validation, upsert with supersede, and the audit trail (real Postgres)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import psycopg2
import pytest
from confluent_kafka import Consumer, Producer
from google.protobuf.message import DecodeError

from fraudops import db
from fraudops.proto_gen.fraud.v1 import fraud_pb2
from fraudops.settings import Settings
from serving.labels import LabelError, UnknownTransaction, label_name, record_label, validate_label
from tests.helpers.serving_env import committed, process_env


@pytest.fixture(scope="module")
def conn(database_url):
    connection = db.connect(database_url)
    yield connection
    connection.close()


def scored(conn, band: str = "ALLOW", score: float = 0.1, tx_id: str | None = None) -> str:
    """Insert one scored transaction and return its id."""
    tx_id = tx_id or f"tx-{uuid.uuid4().hex[:12]}"
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
        (("a\x00b", "FRAUD", "analyst:a", ""), "transaction_id"),
        (("tx-1\n", "FRAUD", "analyst:a", ""), "transaction_id"),
        (("tx-1", "FRAUD", "analyst:\x00", ""), "source"),
        (("tx-1", "FRAUD", "analyst:a\tb", ""), "source"),
        (("tx-1", "FRAUD", "analyst:a", "stolen\x00card"), "note"),
        (("tx-1", "FRAUD", "analyst:a", "bad \ud800 surrogate"), "note"),
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


# --- the Kafka consumer -------------------------------------------------------------------


def label_bytes(tx_id: str, label: int, source: str = "chargeback:visa", note: str = "") -> bytes:
    request = fraud_pb2.LabelRequest(transaction_id=tx_id, label=label, source=source, note=note)
    return request.SerializeToString()


def message_key(i: int, value: bytes) -> bytes:
    """Keyed by transaction id, as a label producer should: a transaction's labels stay in
    order on one partition. Undecodable values get a key of their own."""
    try:
        tx_id = fraud_pb2.LabelRequest.FromString(value).transaction_id
    except DecodeError:
        tx_id = ""
    return (tx_id or f"undecodable-{i}").encode()


def produce(kafka: Settings, topic: str, values: list[bytes]) -> None:
    producer = Producer(kafka.kafka_config(**{"enable.idempotence": True}))
    for i, value in enumerate(values):
        producer.produce(topic, value=value, key=message_key(i, value))
    assert producer.flush(30) == 0


def read_all(kafka: Settings, topic: str, expected: int, deadline_s: float = 60) -> list:
    """Every message on `topic` (waits for `expected` of them, bounded by `deadline_s`)."""
    consumer = Consumer(kafka.kafka_config(**{
        "group.id": f"reader-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest",
    }))  # fmt: skip
    consumer.subscribe([topic])
    found, deadline = [], time.monotonic() + deadline_s
    while len(found) < expected and time.monotonic() < deadline:
        found += [m for m in consumer.consume(100, 0.5) if not m.error()]
    consumer.close()
    return found


def labels_in(conn, tx_ids: list[str]) -> dict[str, str]:
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT transaction_id, label FROM feedback_labels WHERE transaction_id = ANY(%s)",
            (tx_ids,),
        )
        return dict(cur.fetchall())


def start_consumer(kafka: Settings, database_url: str, topics: dict, group: str, log: Path):
    """`python -m serving.label_consumer` as a real process on the test's topics, its
    output in `log`."""
    env = process_env(replace(kafka, database_url=database_url, **topics))
    command = [sys.executable, "-m", "serving.label_consumer", "--group", group]
    with open(log, "w") as out:
        return subprocess.Popen(command, env=env, stderr=out, text=True)


def wait_until(predicate, deadline_s: float = 60) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


@pytest.mark.slow
def test_label_consumer_stores_valid_labels_and_dead_letters_the_rest(
    conn, database_url, kafka_settings, kafka_topics, tmp_path
):
    topics = kafka_topics()
    known = [scored(conn) for _ in range(4)]
    good = [label_bytes(tx, fraud_pb2.FRAUD) for tx in known]
    good.append(label_bytes(known[0], fraud_pb2.LEGIT, note="refund confirmed"))  # supersedes
    good.append(good[1])  # a duplicate (as after a redelivery): stored once
    bad = {
        b"\xff\xfe not a protobuf": "message",
        b"": "message",
        label_bytes("never-scored", fraud_pb2.FRAUD): "transaction_id",
        label_bytes(known[2], fraud_pb2.LABEL_UNSPECIFIED): "label",
        label_bytes(known[3], fraud_pb2.LEGIT, source=""): "source",
        # A forged analyst's verdict, and a source the Kafka door does not accept.
        label_bytes(known[3], fraud_pb2.LEGIT, source="analyst:alice"): "source",
        label_bytes(known[2], fraud_pb2.LEGIT, source="bank:desk"): "source",
    }
    produce(kafka_settings, topics["topic_labels"], good + list(bad))
    group = f"labels-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "label_consumer.log"
    proc = start_consumer(kafka_settings, database_url, topics, group, log)
    try:
        total = len(good) + len(bad)
        assert wait_until(lambda: committed(kafka_settings, group, topics["topic_labels"]) == total)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    stderr = log.read_text()
    assert proc.returncode == 0, stderr
    assert "stopped" in stderr

    assert labels_in(conn, known) == {
        known[0]: "LEGIT",
        known[1]: "FRAUD",
        known[2]: "FRAUD",
        known[3]: "FRAUD",
    }
    assert [a["new"] for a in audit_rows(conn, known[0])] == ["FRAUD", "LEGIT"]
    assert len(audit_rows(conn, known[1])) == 1
    assert [a["source"] for a in audit_rows(conn, known[3])] == ["chargeback:visa"]
    dead = read_all(kafka_settings, topics["topic_labels_dlq"], expected=len(bad))
    reasons = {(m.value() or b""): dict(m.headers())["error"].decode() for m in dead}
    assert set(reasons) == set(bad)
    for value, field in bad.items():
        assert reasons[value].startswith(f"{field}: "), reasons[value]


@pytest.mark.slow
def test_a_database_outage_stalls_the_consumer_and_loses_nothing(
    database_url, kafka_settings, kafka_topics, tmp_path
):
    """Labels that arrive while the database is down are stored once it is back."""
    topics = kafka_topics()
    server = database_url
    name = f"test_outage_{uuid.uuid4().hex[:8]}"
    url = db.with_database(server, name)  # not created yet: every connect fails
    tx_ids = [f"tx-outage-{i}" for i in range(3)]
    produce(
        kafka_settings, topics["topic_labels"], [label_bytes(t, fraud_pb2.FRAUD) for t in tx_ids]
    )
    group = f"labels-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "label_consumer.log"
    proc = start_consumer(kafka_settings, url, topics, group, log)
    try:
        # Until the consumer has met the outage with labels in hand (the group's first
        # assignment may take seconds), nothing it does would show that it stalls.
        assert wait_until(lambda: "database unavailable" in log.read_text())
        assert committed(kafka_settings, group, topics["topic_labels"]) == 0
        # The database comes back whole: built under another name, then renamed into place,
        # so the consumer never sees it without the scored transactions its labels name.
        staging = f"{name}_staging"
        staging_conn = db.connect(db.create_database(server, staging))
        db.migrate(db.with_database(server, staging))
        for tx_id in tx_ids:
            scored(staging_conn, tx_id=tx_id)
        staging_conn.close()
        admin = db.connect(server)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{staging}" RENAME TO "{name}"')
        admin.close()
        outage_conn = db.connect(url)
        assert wait_until(lambda: committed(kafka_settings, group, topics["topic_labels"]) == 3)
        assert labels_in(outage_conn, tx_ids) == dict.fromkeys(tx_ids, "FRAUD")
        outage_conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        db.drop_database(server, name)
    assert proc.returncode == 0, log.read_text()
    assert read_all(kafka_settings, topics["topic_labels_dlq"], expected=1, deadline_s=3) == []
