"""What the tests and the benchmark (`python -m bench.run`) share to run real processes
against the dev stack: free ports, bounded waits, a subprocess's environment built from
Settings, server and scorer processes, fresh topics and databases, and the tiny models.

No pytest here, so the benchmark imports it as it is."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import psycopg2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack import port_open
from fraudops.db import connect
from fraudops.grpc_client import with_token
from fraudops.processes import wait_until
from fraudops.settings import Settings, to_environ

__all__ = ["port_open", "wait_until"]  # re-exported: one implementation with the dev stack

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = Path(__file__).with_name("tiny_model.py")
# The real IP country database the install step places (`make geoip-db`).
GEOIP_DB: Path = ROOT / Settings().geoip_db
# Two distinguishable models: different seeds and output biases.
MODEL_SPECS = {"v1": "v1:7:0.0", "v2": "v2:11:1.5"}
SCOPES = ("ingest", "score", "label")
# Every label source a test writes through gRPC (analyst:<name> is the console's alone).
TEST_SOURCES = ("chargeback:*", "stripe:*", "test:*")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_block(offsets: list[int], low: int = 20000, high: int = 45000) -> int:
    """A port `base` in [low, high) such that base + o is free for every offset: a cluster's
    ports (kept below 55536 for Redis Cluster's bus ports, port + 10000)."""
    rng = random.Random(time.monotonic_ns())
    while True:
        base = rng.randrange(low, high)
        if all(_port_free(base + o) for o in offsets):
            return base


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def loopback_settings(base: Settings, **overrides) -> Settings:
    """`base` for a server on a free loopback port, without a metrics endpoint."""
    return replace(base, grpc_port=free_port(), metrics_port=0, **overrides)


def process_env(settings: Settings) -> dict[str, str]:
    """The environment that hands `settings` to a fraudops subprocess: ours, less any
    FRAUDOPS_ variable, with every setting (`to_environ`, the inverse of load_settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDOPS_")}
    return {**env, **to_environ(settings), "PYTHONUNBUFFERED": "1"}


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    return proc.returncode


@contextlib.contextmanager
def python_process(
    args: list[str], settings: Settings, log_path: Path, stop_timeout: float = 60
) -> Iterator[subprocess.Popen]:
    """Run `python *args` with `settings`, logging to `log_path`; SIGTERMed on exit."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env=process_env(settings),
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield proc
    finally:
        stop_process(proc, timeout=stop_timeout)


def make_settings(**overrides) -> Settings:
    """Settings for an in-process server on a free loopback port, no metrics endpoint."""
    return loopback_settings(Settings(), **overrides)


def service_process(module: str, settings: Settings, log_path: Path, *args: str):
    """Run `python -m module` with `settings`, logging to `log_path`; stopped on exit."""
    return python_process(["-m", module, *args], settings, log_path)


@contextlib.contextmanager
def channel_to(port: int, token: str | None = None) -> Iterator[grpc.Channel]:
    """A plain-text channel to a loopback server, sending `token` on every call."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield with_token(channel, token)
    finally:
        channel.close()


def issue_token(database_url: str, name: str, scopes=SCOPES, sources=TEST_SOURCES) -> str:
    """A caller `name` in that database (replacing one of that name); returns its token."""
    from fraudops.db import connect
    from serving.callers import add_caller

    conn = connect(database_url)
    try:
        return add_caller(conn, name, list(scopes), list(sources))
    finally:
        conn.close()


def wait_serving(channel: grpc.Channel, timeout: float = 60) -> None:
    stub = health_pb2_grpc.HealthStub(channel)

    def serving() -> bool:
        try:
            status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
        except grpc.RpcError:
            return False
        return status == health_pb2.HealthCheckResponse.SERVING

    wait_until(serving, "the server to report SERVING", timeout)


def build_models(out: Path, timeout: float = 600) -> Path:
    """Model directories v1 and v2 (MODEL_SPECS), built in a TensorFlow subprocess."""
    subprocess.run(
        [sys.executable, str(TINY_MODEL), str(out), *MODEL_SPECS.values()],
        check=True, cwd=ROOT, capture_output=True, timeout=timeout,
    )  # fmt: skip
    return out


@contextlib.contextmanager
def fresh_database(server_url: str, prefix: str) -> Iterator[str]:
    """A new database on `server_url`'s server with every migration applied; dropped after."""
    from fraudops import db

    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    url = db.create_database(server_url, name)
    try:
        db.migrate(url)
        yield url
    finally:
        db.drop_database(server_url, name)


@contextlib.contextmanager
def db_cursor(database_url: str) -> Iterator[psycopg2.extensions.cursor]:
    """A cursor of one transaction on a connection of its own: committed when the block
    ends, rolled back if it raises, the connection closed either way."""
    conn = connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def query(database_url: str, sql: str, params: tuple = ()) -> list[tuple]:
    with db_cursor(database_url) as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def _topics_ready(admin, names: list[str]) -> bool:
    """Topic creation is asynchronous: the metadata lists every topic with a leader for
    every partition, so a first produce cannot race it."""
    topics = admin.list_topics(timeout=10).topics
    return all(
        n in topics
        and topics[n].error is None
        and all(p.leader >= 0 for p in topics[n].partitions.values())
        for n in names
    )


def create_topics(kafka: Settings, prefix: str, n_partitions: int = 3) -> dict[str, str]:
    """Fresh topics `<prefix>-<random>.<name>` for every topic of the settings, keyed like
    the settings' fields (topic_raw, ...), ready to produce to; `kafka`'s login may create
    topics (the admin's)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(kafka.kafka_config())
    unique = f"{prefix}-{uuid.uuid4().hex[:12]}"
    names = {key: f"{unique}.{base}" for key, base in Settings().topics().items()}
    new = [NewTopic(name, num_partitions=n_partitions) for name in names.values()]
    for future in admin.create_topics(new).values():
        future.result(timeout=30)
    wait_until(lambda: _topics_ready(admin, list(names.values())), f"topics {names}", 30)
    return names


def delete_topics(kafka: Settings, names: list[str]) -> None:
    """Delete topics; one that is already gone (a test may delete its own) is fine."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    if not names:
        return
    admin = AdminClient(kafka.kafka_config())  # alive until the futures resolve
    for future in admin.delete_topics(names).values():
        try:
            future.result(timeout=30)
        except KafkaException as err:
            if "UNKNOWN_TOPIC" not in str(err):
                raise


def wait_for_members(kafka: Settings, group: str, n: int, timeout: float = 120) -> None:
    """Until `n` members of a consumer group each hold at least one partition."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(kafka.kafka_config(log_level=4))

    def holding() -> bool:
        members = admin.describe_consumer_groups([group])[group].result(timeout=10).members
        return sum(1 for m in members if m.assignment and m.assignment.topic_partitions) == n

    wait_until(holding, f"{n} members of {group} to hold partitions", timeout)
