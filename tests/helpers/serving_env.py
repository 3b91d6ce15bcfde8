"""Shared pieces of the serving tests: tiny models built once per session, transactions,
server and scorer processes on loopback, and bounded waits for Kafka and Postgres.

Every wait here is bounded in time and count; nothing asserts on how long anything took."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from fraudops.modelspec import publish
from fraudops.proto_gen.fraud.v1 import fraud_pb2
from fraudops.settings import Settings
from testkit.stack import (
    ROOT,
    build_models,
    channel_to,
    free_port,
    issue_token,
    make_settings,
    process_env,
    query,
    service_process,
    stop_process,
    wait_serving,
    wait_until,
)

# Shared with the benchmark through testkit.stack; re-exported for the tests.
__all__ = [
    "ROOT", "channel_to", "free_port", "issue_token", "process_env", "service_process",
    "stop_process", "wait_serving", "wait_until",
]  # fmt: skip


@pytest.fixture(scope="session")
def built_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Model directories v1 and v2, built once in a TensorFlow subprocess."""
    return build_models(tmp_path_factory.mktemp("built-models"))


@pytest.fixture(scope="session")
def client_token(database_url: str) -> str:
    """The token of a caller with every scope and the test label sources, in the session's
    database: what the tests' clients of a server on that database send."""
    return issue_token(database_url, "tests-all")


@pytest.fixture
def serving_root(tmp_path: Path) -> Path:
    root = tmp_path / "serving"
    root.mkdir()
    return root


def publish_model(built: Path, serving_root: Path, version: str, as_version: str | None = None):
    """Publish a built model into the watched directory the way promote does."""
    return publish(built / version, serving_root, as_version or version)


def transaction(i: int, user_id: int | None = None, **fields) -> fraud_pb2.TransactionRequest:
    """A valid transaction; `fields` override any field."""
    values = {
        "transaction_id": f"tx-{i}",
        "user_id": user_id if user_id is not None else 1 + i % 17,
        "amount": 10.0 + (i % 50) * 37.5,
        "timestamp": 1_700_000_000 + i * 30,
        "type": ("TRANSFER", "CASH_OUT", "PAYMENT", "DEBIT", "CASH_IN")[i % 5],
        "old_balance_orig": 5000.0,
        "new_balance_orig": 4000.0,
        "old_balance_dest": 100.0,
        "new_balance_dest": 1100.0,
        "dest_id": 900 + i % 7,
        "channel": "web",
    }
    values.update(fields)
    return fraud_pb2.TransactionRequest(**values)


def unique_ids(prefix: str, n: int) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"{prefix}-{run}-{i}" for i in range(n)]


def serving_v1_settings(built: Path, serving_root: Path, group: str, **overrides) -> Settings:
    """Settings for a server or scorer on loopback with the tiny model v1 published, in a
    consumer group of its own named after `group`; `overrides` name endpoints and topics."""
    publish_model(built, serving_root, "v1")
    group_id = f"{group}-{uuid.uuid4().hex[:8]}"
    return make_settings(model_dir=serving_root, consumer_group=group_id, **overrides)


@pytest.fixture
def v1_settings(built_models, serving_root, kafka_settings, kafka_topics):
    """Factory `v1_settings(group, partitions=3, **overrides)`: `serving_v1_settings` on the
    session's broker with its login and fresh topics of `partitions` partitions; `overrides`
    name the rest (database, Redis, batch size)."""

    def make(group: str, partitions: int = 3, **overrides) -> Settings:
        endpoints = {**kafka_settings.kafka_login(), **kafka_topics(partitions), **overrides}
        return serving_v1_settings(built_models, serving_root, group, **endpoints)

    return make


@contextlib.contextmanager
def running_app(settings: Settings, max_workers: int = 4, grace: float = 1) -> Iterator:
    """The gRPC server (`ServingApp`) in-process; stopped when the block ends, its inline
    sink drained, so what it stored can be checked right after. Imported here so that
    the unit tier, which loads this plugin too, does not load the server."""
    from serving.server import ServingApp

    app = ServingApp(settings, max_workers=max_workers)
    app.start()
    try:
        yield app
    finally:
        app.stop(grace=grace)


def consume(kafka: Settings, topic: str, expected: int, timeout: float = 90) -> list[Message]:
    """Read a topic from the start (as `kafka`'s login) until `expected` messages or the
    timeout; a few more seconds after reaching it, so a duplicate would show up too."""
    consumer = Consumer(kafka.kafka_config(**{
        "group.id": f"test-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    }))  # fmt: skip
    consumer.subscribe([topic])
    found: list[Message] = []
    deadline = time.monotonic() + timeout
    settle_until = None
    try:
        while time.monotonic() < (settle_until or deadline):
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is None:
                    found.append(msg)
            if len(found) >= expected and settle_until is None:
                settle_until = min(deadline, time.monotonic() + 2.0)
    finally:
        consumer.close()
    return found


def on_topic(kafka: Settings, topic: str, partitions: int = 3) -> int | None:
    """Messages on a topic so far (the sum of its partitions' high watermarks); None while
    the broker cannot say yet (a new topic's leaders still moving in)."""
    consumer = Consumer(kafka.kafka_config(**{"group.id": f"wm-{uuid.uuid4().hex}"}))
    try:
        marks = [
            consumer.get_watermark_offsets(TopicPartition(topic, p), 10) for p in range(partitions)
        ]
    except KafkaException:
        return None
    finally:
        consumer.close()
    return sum(high for _low, high in marks)


def committed(kafka: Settings, group: str, topic: str, partitions: int = 3) -> int:
    """Sum of the group's committed offsets on `topic` (= messages it is done with)."""
    consumer = Consumer(kafka.kafka_config(**{"group.id": group}))
    offsets = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], 30)
    consumer.close()
    return sum(max(tp.offset, 0) for tp in offsets)


def insert_scored(database_url: str, tx_id: str) -> None:
    """A scored_transactions row for `tx_id`, so a label may name it."""
    query(
        database_url,
        "INSERT INTO scored_transactions (transaction_id, user_id, event_ts, type, amount,"
        " score, band, model_version, source) VALUES (%s, 7, 1700000000, 'TRANSFER', 10.0,"
        " 0.1, 'ALLOW', 'v1', 'inline') RETURNING 1",
        (tx_id,),
    )


def scored_ids(database_url: str, ids: list[str]) -> list[str]:
    """Transaction ids of `ids` present in scored_transactions (with repeats, if any)."""
    rows = query(
        database_url,
        "SELECT transaction_id FROM scored_transactions WHERE transaction_id = ANY(%s)",
        (ids,),
    )
    return [r[0] for r in rows]
