"""Shared pieces of the serving tests: tiny models built once per session, transactions,
server and scorer processes on loopback, and bounded waits for Kafka and Postgres.

Every wait here is bounded in time and count; nothing asserts on how long anything took."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import psycopg2
import pytest
from confluent_kafka import Consumer, Message, TopicPartition
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fraudops.modelspec import publish
from fraudops.proto_gen.fraud.v1 import fraud_pb2
from fraudops.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TINY_MODEL = Path(__file__).with_name("tiny_model.py")
# Two distinguishable models: different seeds and output biases.
MODEL_SPECS = {"v1": "v1:7:0.0", "v2": "v2:11:1.5"}


@pytest.fixture(scope="session")
def built_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Model directories v1 and v2, built once in a TensorFlow subprocess."""
    out = tmp_path_factory.mktemp("built-models")
    subprocess.run(
        [sys.executable, str(TINY_MODEL), str(out), *MODEL_SPECS.values()],
        check=True, cwd=ROOT, capture_output=True, timeout=600,
    )  # fmt: skip
    return out


@pytest.fixture
def serving_root(tmp_path: Path) -> Path:
    root = tmp_path / "serving"
    root.mkdir()
    return root


def publish_model(built: Path, serving_root: Path, version: str, as_version: str | None = None):
    """Publish a built model into the watched directory the way promote does."""
    return publish(built / version, serving_root, as_version or version)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def make_settings(**overrides) -> Settings:
    """Settings for an in-process server on a free loopback port, no metrics endpoint."""
    return replace(Settings(), grpc_port=free_port(), metrics_port=0, **overrides)


def process_env(settings: Settings) -> dict[str, str]:
    """The environment that hands `settings` to a fraudops-serve / -scorer subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDOPS_")}
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "DATABASE_URL": settings.database_url or "",
        "FRAUDOPS_MODEL_DIR": str(settings.model_dir),
        "FRAUDOPS_GRPC_PORT": str(settings.grpc_port),
        "FRAUDOPS_METRICS_PORT": str(settings.metrics_port),
        "FRAUDOPS_CONSUMER_GROUP": settings.consumer_group,
        "FRAUDOPS_SCORER_BATCH_SIZE": str(settings.scorer_batch_size),
        "FRAUDOPS_LOG_LEVEL": settings.log_level,
        "PYTHONUNBUFFERED": "1",
    })  # fmt: skip
    for key in ("topic_raw", "topic_scores", "topic_labels", "topic_dlq", "topic_labels_dlq"):
        env[f"FRAUDOPS_{key.upper()}"] = getattr(settings, key)
    return env


@contextlib.contextmanager
def service_process(module: str, settings: Settings, log_path: Path, *args: str):
    """Run `python -m module` with `settings`, logging to `log_path`; stopped on exit."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args], cwd=ROOT, env=process_env(settings),
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    return proc.returncode


def wait_until(check: Callable[[], object], what: str, timeout: float = 60, every: float = 0.1):
    """Poll `check` until it returns something truthy; fail naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def wait_serving(channel: grpc.Channel, timeout: float = 60) -> None:
    stub = health_pb2_grpc.HealthStub(channel)

    def serving() -> bool:
        try:
            status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
        except grpc.RpcError:
            return False
        return status == health_pb2.HealthCheckResponse.SERVING

    wait_until(serving, "the server to report SERVING", timeout)


def consume(bootstrap: str, topic: str, expected: int, timeout: float = 90) -> list[Message]:
    """Read a topic from the start until `expected` messages or the timeout; a few more
    seconds after reaching it, so a duplicate would show up too."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })  # fmt: skip
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


def committed(bootstrap: str, group: str, topic: str, partitions: int = 3) -> int:
    """Sum of the group's committed offsets on `topic` (= messages it is done with)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    offsets = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], 30)
    consumer.close()
    return sum(max(tp.offset, 0) for tp in offsets)


@contextlib.contextmanager
def fresh_database(server_url: str, prefix: str) -> Iterator[str]:
    """A migrated database of its own on the server of `server_url`, dropped on exit."""
    from serving import db

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    url = db.create_database(server_url, name)
    try:
        db.migrate(url)
        yield url
    finally:
        db.drop_database(server_url, name)


def query(database_url: str, sql: str, params: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


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


@contextlib.contextmanager
def channel_to(port: int) -> Iterator[grpc.Channel]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel
    finally:
        channel.close()
