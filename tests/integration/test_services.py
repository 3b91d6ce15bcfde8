"""The local services and the schema, against the real broker and the real Postgres."""

from __future__ import annotations

import json
import uuid

import psycopg2
import pytest
from confluent_kafka import Consumer, Producer

from fraudops import db
from fraudops.settings import Settings

TABLES = {"scored_transactions", "feedback_labels", "model_deployments", "audit_log"}


def test_kafka_roundtrip_on_fresh_topic(kafka_settings, kafka_topics):
    topic = kafka_topics(n_partitions=3)["topic_raw"]
    producer = Producer(kafka_settings.kafka_config(**{"enable.idempotence": True}))
    sent = {f"user-{i}": f"payload-{i}".encode() for i in range(20)}
    for key, value in sent.items():
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0

    consumer = Consumer(kafka_settings.kafka_config(**{
        "group.id": f"test-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }))  # fmt: skip
    consumer.subscribe([topic])
    received = {}
    try:
        for _ in range(200):
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                received[message.key().decode()] = message.value()
            if len(received) == len(sent):
                break
    finally:
        consumer.close()
    assert received == sent


def test_topic_factory_names_are_unique_and_complete(kafka_topics):
    first, second = kafka_topics(), kafka_topics(n_partitions=1)
    assert set(first) == set(Settings().topics())
    assert {"topic_raw", "topic_scores", "topic_labels", "topic_dlq"} <= set(first)
    assert not set(first.values()) & set(second.values())
    assert first["topic_dlq"].endswith("raw_transactions.dlq")  # literal-ok: the default name


def _tables(url: str) -> set[str]:
    with db.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row[0] for row in cur.fetchall()}


def test_migrations_created_all_tables(database_url):
    assert TABLES | {"schema_migrations"} <= _tables(database_url)
    with db.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT version FROM schema_migrations ORDER BY version")
        recorded = [row[0] for row in cur.fetchall()]
    assert recorded == [version for version, _ in db.migration_files()]


def test_migrate_again_applies_nothing(database_url):
    assert db.migrate(database_url) == []


def _insert_audit(cur, kind: str) -> int:
    cur.execute(
        "INSERT INTO audit_log (kind, subject, detail) VALUES (%s, 'v1', %s) RETURNING id",
        (kind, json.dumps({"by": "test"})),
    )
    return cur.fetchone()[0]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET subject = 'tampered' WHERE id = %s",
        "DELETE FROM audit_log WHERE id = %s",
    ],
)
def test_audit_log_is_append_only(database_url, statement):
    conn = db.connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            row_id = _insert_audit(cur, "promotion")
        with pytest.raises(psycopg2.Error, match="append-only"), conn, conn.cursor() as cur:
            cur.execute(statement, (row_id,))
        with conn.cursor() as cur:
            cur.execute("SELECT subject FROM audit_log WHERE id = %s", (row_id,))
            assert cur.fetchone() == ("v1",)
    finally:
        conn.close()


def test_scored_transaction_redelivery_is_written_once(database_url):
    tx_id = f"tx-{uuid.uuid4().hex}"
    insert = (
        "INSERT INTO scored_transactions (transaction_id, user_id, event_ts, type, amount,"
        " score, band, model_version, reasons, source)"
        " VALUES (%s, 7, 1700000000, 'TRANSFER', 250.0, %s, 'ALLOW', 'v1', %s, 'stream')"
        " ON CONFLICT (transaction_id) DO NOTHING"
    )
    with db.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(insert, (tx_id, 0.01, json.dumps(["amount"])))
        first = cur.rowcount
        cur.execute(insert, (tx_id, 0.99, json.dumps(["other"])))
        second = cur.rowcount
        cur.execute("SELECT score FROM scored_transactions WHERE transaction_id = %s", (tx_id,))
        rows = cur.fetchall()
    assert (first, second) == (1, 0)
    assert rows == [(0.01,)]
