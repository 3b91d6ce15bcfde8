"""Shared fixtures for tests against the real services (never mocks).

- `project_root`: the repository root (Path).
- `kafka_bootstrap`: bootstrap servers of the running broker; starts it with
  `scripts/services.sh up kafka` when nothing listens there.
- `kafka_topics`: factory `kafka_topics(n_partitions=3)` -> dict of fresh, uniquely named
  topics keyed like the settings (topic_raw, topic_scores, topic_labels, topic_dlq,
  topic_labels_dlq); deleted when the test ends.
- `database_url`: a database created for this pytest session on the local Postgres
  (started if needed), all migrations applied, dropped at the end.
- `mlflow_tracking_uri`: a real `mlflow server` of this session on a free loopback port,
  with a temporary SQLite backend and artifact directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytest_plugins = ["tests.helpers.serving_env"]

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ROOT / "scripts" / "services.sh"
DEFAULT_KAFKA = "127.0.0.1:9092"
DEFAULT_DATABASE_URL = "postgresql://fraudops@127.0.0.1:55432/fraudops"
TOPIC_KEYS = {
    "topic_raw": "raw_transactions",
    "topic_scores": "transaction_scores",
    "topic_labels": "transaction_labels",
    "topic_dlq": "raw_transactions.dlq",
    "topic_labels_dlq": "transaction_labels.dlq",
}


TIERS = ("unit", "integration", "pipeline")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tier marker comes from the folder a test lives in (tests/<tier>/...)."""
    for item in items:
        tier = Path(item.path).relative_to(ROOT / "tests").parts[0]
        if tier in TIERS:
            item.add_marker(tier)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _ensure_service(name: str, host: str, port: int) -> None:
    """Start a local service through the project's script unless it already listens."""
    if _port_open(host, port):
        return
    result = subprocess.run(
        [str(SERVICES), "up", name], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/services.sh up {name} failed:\n{result.stderr[-3000:]}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_KAFKA)
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    _ensure_service("kafka", host, int(port))
    from confluent_kafka.admin import AdminClient

    AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30)
    return bootstrap


def _wait_for_topics(admin, names: list[str], present: bool, timeout: float = 30) -> None:
    """Topic creation and deletion are asynchronous: wait until the metadata agrees, with
    a leader for every partition, so a test's first produce cannot race it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=10).topics
        if present:
            done = all(
                n in topics
                and topics[n].error is None
                and all(p.leader >= 0 for p in topics[n].partitions.values())
                for n in names
            )
        else:
            done = not any(n in topics for n in names)
        if done:
            return
        time.sleep(0.1)
    raise TimeoutError(f"topics {names} not {'created' if present else 'deleted'} in {timeout}s")


@pytest.fixture
def kafka_topics(kafka_bootstrap: str) -> Iterator[Callable[..., dict[str, str]]]:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created: list[str] = []

    def make(n_partitions: int = 3) -> dict[str, str]:
        prefix = f"test-{uuid.uuid4().hex[:12]}"
        names = {key: f"{prefix}.{base}" for key, base in TOPIC_KEYS.items()}
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=n_partitions) for name in names.values()]
        )
        for future in futures.values():
            future.result(timeout=30)
        created.extend(names.values())
        _wait_for_topics(admin, list(names.values()), present=True)
        return names

    yield make
    if created:
        from confluent_kafka import KafkaException

        for future in admin.delete_topics(created).values():
            try:
                future.result(timeout=30)
            except KafkaException as err:  # a test may delete its own topic
                if "UNKNOWN_TOPIC" not in str(err):
                    raise


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    from tests.helpers.serving_env import fresh_database

    server_url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    parts = urlsplit(server_url)
    _ensure_service("postgres", parts.hostname or "127.0.0.1", parts.port or 5432)
    with fresh_database(server_url, f"fraudops_test_{os.getpid()}") as url:
        yield url


@pytest.fixture(scope="session")
def mlflow_tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [
        str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
        "--artifacts-destination", str(home / "artifacts"), "--serve-artifacts",
    ]  # fmt: skip
    with open(home / "server.log", "wb") as log:
        # Own process group: the CLI starts uvicorn workers, which must stop with it.
        # No job runner: its dozen huey workers would compete with the tests for 2 cores.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        server = subprocess.Popen(
            command,
            cwd=home,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_http(f"{uri}/health", server, home / "server.log", timeout=180)
        yield uri
    finally:
        _stop_group(server)


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _wait_for_http(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args[0]} exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    _stop_group(process)
    pytest.fail(f"{url} not ready after {timeout}s; see {log}")
