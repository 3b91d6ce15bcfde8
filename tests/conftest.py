"""Shared fixtures for tests against the real services (never mocks).

- `project_root`: the repository root (Path).
- `kafka_settings`: `Settings` naming the running broker and the admin login to it (all
  else default; `replace(base, **kafka_settings.kafka_login())` carries both into other
  settings): the settings' broker, started with `python -m devstack up kafka` when
  nothing listens there; the login from the environment (KAFKA_SASL_USERNAME, ...), else
  the dev stack's admin (run/kafka/credentials.json).
- `kafka_topics`: factory `kafka_topics(n_partitions=3)` -> dict of fresh, uniquely named
  topics keyed like the settings (topic_raw, topic_scores, topic_labels, topic_dlq,
  topic_labels_dlq, topic_inline_dlq); deleted when the test ends.
- `database_url`: a database created for this pytest session on DATABASE_URL's server, by
  default the dev stack's Postgres (started if needed), all migrations applied, dropped at
  the end.
- `client_token` (tests.helpers.serving_env): the token of a caller with every scope in
  that database, for the tests' gRPC clients.
- `mlflow_tracking_uri`: a real `mlflow server` of this session on a free loopback port,
  with a temporary SQLite backend and artifact directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from devstack import with_local_kafka_login
from fraudops.settings import Settings, load_settings, url_address
from testkit.stack import (
    create_topics,
    delete_topics,
    free_port,
    fresh_database,
    port_open,
    wait_until,
)

pytest_plugins = ["tests.helpers.serving_env", "tests.helpers.geoip"]

ROOT = Path(__file__).resolve().parents[1]


TIERS = ("unit", "integration", "pipeline", "faults")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tier marker comes from the folder a test lives in (tests/<tier>/...)."""
    for item in items:
        tier = Path(item.path).relative_to(ROOT / "tests").parts[0]
        if tier in TIERS:
            item.add_marker(tier)


def _ensure_service(name: str, host: str, port: int) -> None:
    """Start a service of the dev stack unless something already listens there."""
    if port_open(host, port):
        return
    command = [sys.executable, "-m", "devstack", "up", name]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command[1:])} failed:\n{result.stderr[-3000:]}")


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def kafka_settings() -> Settings:
    settings = load_settings()
    _ensure_service("kafka", *settings.kafka_address())
    settings = with_local_kafka_login(settings)
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    kafka = replace(Settings(), **settings.kafka_login())
    try:
        AdminClient(kafka.kafka_config()).list_topics(timeout=30)
    except KafkaException as err:
        pytest.fail(f"Kafka at {kafka.kafka_bootstrap_servers} as "
                    f"{kafka.kafka_sasl_username or 'nobody'} does not answer: {err}")  # fmt: skip
    return kafka


@pytest.fixture
def kafka_topics(kafka_settings: Settings) -> Iterator[Callable[..., dict[str, str]]]:
    """Factory of fresh topics named after the settings' topics, deleted at the end."""
    created: list[str] = []

    def make(n_partitions: int = 3) -> dict[str, str]:
        names = create_topics(kafka_settings, "test", n_partitions)
        created.extend(names.values())
        return names

    yield make
    delete_topics(kafka_settings, created)


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The local Postgres (started if needed), as a server URL to create databases on."""
    server_url = load_settings().with_local_services().database_url
    _ensure_service("postgres", *url_address(server_url))
    return server_url


@pytest.fixture(scope="session")
def database_url(postgres_server_url: str) -> Iterator[str]:
    with fresh_database(postgres_server_url, "fraudops_test") as url:
        yield url


@pytest.fixture(scope="session")
def mlflow_tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("mlflow")
    port = free_port()
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
    def answers() -> bool:
        if process.poll() is not None:
            pytest.fail(f"{process.args[0]} exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            return False

    try:
        wait_until(answers, url, timeout, every=0.5)
    except TimeoutError:
        _stop_group(process)
        pytest.fail(f"{url} not ready after {timeout}s; see {log}")
