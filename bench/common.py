"""What every benchmark part shares: a fresh database and topics on the running services,
tiny models, the server and scorer as real processes, transactions, and statistics."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import numpy as np
from confluent_kafka.admin import AdminClient, NewTopic
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fraudops.proto_gen.fraud.v1 import fraud_pb2
from fraudops.settings import Settings
from serving import db

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ROOT / "tests" / "helpers" / "tiny_model.py"
TOPIC_KEYS = ("topic_raw", "topic_scores", "topic_labels", "topic_dlq", "topic_labels_dlq")


@dataclass
class Stats:
    """Latencies in seconds, summarised in microseconds."""

    samples: list[float]

    def pct(self, q: float) -> float:
        return float(np.percentile(self.samples, q)) * 1e6 if self.samples else float("nan")

    def summary(self) -> str:
        return (
            f"p50 {self.pct(50):7.0f} µs  p99 {self.pct(99):7.0f} µs  max {self.pct(100):7.0f} µs"
        )


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def build_models(out: Path) -> Path:
    """Two tiny TFLite models (v1, v2) built in a TensorFlow subprocess."""
    subprocess.run(
        [sys.executable, str(TINY_MODEL), str(out), "v1:7:0.0", "v2:11:1.5"],
        check=True, cwd=ROOT, capture_output=True, timeout=900,
    )  # fmt: skip
    return out


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    name = f"fraudops_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    url = db.create_database(server_url, name)
    try:
        db.migrate(url)
        yield url
    finally:
        db.drop_database(server_url, name)


def fresh_topics(bootstrap: str, partitions: int = 3) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    names = {key: f"{prefix}.{key}" for key in TOPIC_KEYS}
    for future in admin.create_topics(
        [NewTopic(n, num_partitions=partitions) for n in names.values()]
    ).values():
        future.result(timeout=30)
    wait_for(lambda: all(n in admin.list_topics(timeout=10).topics for n in names.values()),
             "topics", 30)  # fmt: skip
    return names


def delete_topics(bootstrap: str, names: dict[str, str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(list(names.values())).values():
        with contextlib.suppress(Exception):
            future.result(timeout=30)


def wait_for(check: Callable[[], object], what: str, timeout: float, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def process_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDOPS_")}
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "DATABASE_URL": settings.database_url or "",
        "FRAUDOPS_MODEL_DIR": str(settings.model_dir),
        "FRAUDOPS_GRPC_PORT": str(settings.grpc_port),
        "FRAUDOPS_METRICS_PORT": str(settings.metrics_port),
        "FRAUDOPS_CONSUMER_GROUP": settings.consumer_group,
        "FRAUDOPS_SCORER_BATCH_SIZE": str(settings.scorer_batch_size),
        "FRAUDOPS_LOG_LEVEL": "WARNING",
    })  # fmt: skip
    for key in TOPIC_KEYS:
        env[f"FRAUDOPS_{key.upper()}"] = getattr(settings, key)
    return env


@contextlib.contextmanager
def process(args: list[str], settings: Settings, log_path: Path) -> Iterator[subprocess.Popen]:
    """A server or scorer process (`args` after the interpreter), SIGTERMed at the end."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=process_env(settings),
                                stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_serving(port: int, timeout: float = 120) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
            except grpc.RpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING

        wait_for(serving, "the server to serve", timeout, every=0.2)


def bench_settings(base: Settings, **overrides) -> Settings:
    return replace(base, grpc_port=free_port(), metrics_port=0, **overrides)


def transactions(n: int, users: int, seed: int, prefix: str) -> list[fraud_pb2.TransactionRequest]:
    """Plausible transactions spread over `users` users, in time order."""
    rng = np.random.default_rng(seed)
    types = ("CASH_IN", "CASH_OUT", "DEBIT", "PAYMENT", "TRANSFER")
    amount = np.round(rng.lognormal(7.5, 1.2, n), 2) + 0.01
    old = np.round(rng.lognormal(9.0, 1.5, n), 2)
    user = rng.integers(1, users + 1, n)
    kind = rng.integers(0, 5, n)
    return [
        fraud_pb2.TransactionRequest(
            transaction_id=f"{prefix}-{i}",
            user_id=int(user[i]),
            amount=float(amount[i]),
            timestamp=1_700_000_000 + i // 10,
            type=types[kind[i]],
            old_balance_orig=float(old[i]),
            new_balance_orig=float(max(old[i] - amount[i], 0)),
            old_balance_dest=0.0,
            new_balance_dest=float(amount[i]),
            dest_id=int(user[i]) + 7,
            channel="bench",
        )  # fmt: skip
        for i in range(n)
    ]
