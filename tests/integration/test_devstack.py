"""`python -m devstack` against real Kafka and Postgres processes of its own: a
throwaway run directory and free ports (through the settings' environment variables), so
the services the other tests share are never touched."""

from __future__ import annotations

import http.server
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from devstack import APPS, CLUSTERS, SERVICES, with_local_kafka_login
from fraudops.processes import process_alive
from fraudops.settings import Settings, load_settings
from testkit.stack import ROOT, free_port, port_open, wait_until


class Devstack:
    """The CLI with its own run directory and ports."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDOPS_")}
        for name in ("DATABASE_URL", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"):
            env.pop(name, None)
        env.update({
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "FRAUDOPS_KAFKA_CONTROLLER_PORT": str(free_port()),
            "FRAUDOPS_POSTGRES_PORT": str(free_port()),
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
            "AIRFLOW_URL": f"http://127.0.0.1:{free_port()}",
        })  # fmt: skip
        self.env = env
        self.settings = load_settings(env)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "devstack", *args, "--run-dir", str(self.run_dir)]

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(*args), cwd=ROOT, env=self.env, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip

    def pid(self, service: str) -> int:
        return int((self.run_dir / service / f"{service}.pid").read_text())


@pytest.fixture
def devstack() -> Iterator[Devstack]:
    """Outside pytest's temporary directories: a concurrent pytest session resets their
    root to mode 700, which would lock the postgres user out of its data directory."""
    run_dir = Path(tempfile.mkdtemp(prefix="fraudops-devstack-"))
    stack = Devstack(run_dir / "run")
    try:
        yield stack
    finally:
        stack("down")
        shutil.rmtree(run_dir)


def _postmasters(data_dir: Path) -> list[int]:
    """Pids of postgres processes serving `data_dir`."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args[0].endswith(b"/postgres") and str(data_dir).encode() in args:
            found.append(int(proc.name))
    return found


def _shared_services() -> dict[str, bool]:
    """Whether the services the other tests use answer (they must not be touched)."""
    shared = load_settings().with_local_services()
    return {
        "kafka": port_open(*shared.kafka_address()),
        "postgres": port_open("127.0.0.1", shared.postgres_port),
    }


def test_up_is_idempotent_env_exports_the_settings_and_down_stops_what_it_started(devstack):
    shared_before = _shared_services()
    first = devstack("up", "kafka", "postgres")
    assert first.returncode == 0, first.stderr
    pids = {name: devstack.pid(name) for name in ("kafka", "postgres")}

    settings = with_local_kafka_login(devstack.settings, devstack.run_dir)
    assert settings.kafka_sasl_username == "admin"
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka_config())
    assert set(Settings().topics().values()) <= set(admin.list_topics(timeout=10).topics)
    with psycopg2.connect(settings.local_database_url()) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM schema_migrations")
        assert cur.fetchone()[0] >= 1

    second = devstack("up", "kafka", "postgres")
    assert second.returncode == 0, second.stderr
    assert second.stderr.count("already running") == 2
    assert "starting" not in second.stderr
    assert {name: devstack.pid(name) for name in pids} == pids

    status = devstack("status", "kafka", "postgres", "mlflow").stdout.splitlines()
    assert status[0].split()[:3] == ["kafka", "up", settings.kafka_bootstrap_servers]
    assert f"pid {pids['postgres']}" in status[1]
    assert status[2].split()[:2] == ["mlflow", "down"]

    exported = {}
    for line in devstack("env").stdout.splitlines():
        assert line.startswith("export ")
        name, _, value = line.removeprefix("export ").partition("=")
        exported[name] = shlex.split(value)[0] if value else ""
    assert load_settings(exported) == settings.with_local_services()

    stopped = devstack("down", "kafka", "postgres")
    assert stopped.returncode == 0, stopped.stderr
    assert not any(process_alive(pid, group=True) for pid in pids.values())
    assert not port_open(*settings.kafka_address())
    assert not port_open("127.0.0.1", settings.postgres_port)
    assert _shared_services() == shared_before


def test_a_broker_formatted_without_users_is_made_again_with_them(devstack):
    data = devstack.run_dir / "kafka" / "data"
    (data / "old-topic-0").mkdir(parents=True)
    (data / "meta.properties").write_text("version=1\n")  # an older stack's: no SCRAM users
    up = devstack("up", "kafka")
    assert up.returncode == 0, up.stderr
    assert "formatted without SASL users" in up.stderr
    assert not (data / "old-topic-0").exists()
    from confluent_kafka.admin import AdminClient

    admin = with_local_kafka_login(devstack.settings, devstack.run_dir)
    assert set(Settings().topics().values()) <= set(
        AdminClient(admin.kafka_config()).list_topics(timeout=10).topics
    )


def test_concurrent_ups_start_one_postgres(devstack):
    runs = [
        subprocess.Popen(
            devstack.command("up", "postgres"),
            cwd=ROOT,
            env=devstack.env,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    errors = [run.communicate(timeout=300)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], errors
    assert sum("postgres: starting" in e for e in errors) == 1
    assert sum("postgres: already running" in e for e in errors) == 1
    assert _postmasters(devstack.run_dir / "postgres" / "data") == [devstack.pid("postgres")]


def test_a_failed_start_shows_the_log_tail_and_leaves_nothing_running(devstack):
    with socket.socket() as blocker:  # the broker's controller port, taken
        blocker.bind(("127.0.0.1", devstack.settings.kafka_controller_port))
        blocker.listen()
        result = devstack("up", "kafka")
    assert result.returncode == 1
    assert "kafka exited during start-up" in result.stderr
    assert "last lines of" in result.stderr and "kafka.log" in result.stderr
    assert "Address already in use" in result.stderr  # the broker's own words, from its log
    assert not process_alive(devstack.pid("kafka"), group=True)


def test_a_missing_install_is_named(devstack, tmp_path):
    empty = tmp_path / "no-jars"
    empty.mkdir()
    result = devstack("up", "kafka", "--kafka-libs", str(empty))
    assert result.returncode == 1
    assert "jars are missing" in result.stderr and "make install" in result.stderr
    assert str(empty) in result.stderr


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        return None


def test_a_port_served_by_someone_else_is_used_and_left_running(devstack):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    devstack.env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        up = devstack("up", "mlflow")
        assert up.returncode == 0, up.stderr
        assert "not started here; using it" in up.stderr
        assert "(not started here)" in devstack("status", "mlflow").stdout
        down = devstack("down", "mlflow")
        assert "left running" in down.stderr
        assert port_open("127.0.0.1", server.server_port)
    finally:
        server.shutdown()
        server.server_close()


def _group_members(pgid: int) -> list[int]:
    """Pids of the live processes in process group `pgid` (the server and its workers)."""
    members = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fields = (proc / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(proc.name))
    return members


def test_down_without_names_stops_the_apps_and_their_workers_and_status_lists_them(
    devstack, tmp_path
):
    (tmp_path / "models").mkdir()
    devstack.env.update({
        "FRAUDOPS_REDIS_PORT": str(free_port()),
        "FRAUDOPS_GRPC_PORT": str(free_port()),
        "FRAUDOPS_METRICS_PORT": str(free_port()),
        "FRAUDOPS_SERVER_WORKERS": "2",
        "FRAUDOPS_MODEL_DIR": str(tmp_path / "models"),
    })  # fmt: skip
    settings = load_settings(devstack.env)
    started = devstack("up", "postgres", "redis", "server", "label-consumer")
    assert started.returncode == 0, started.stderr
    server = devstack.pid("server")
    others = [devstack.pid(name) for name in ("label-consumer", "redis")]
    wait_until(lambda: len(_group_members(server)) >= 3, "the server's two workers", 60)

    status = {line.split()[0]: line.split()[1] for line in devstack("status").stdout.splitlines()}
    assert list(status) == [*SERVICES, *CLUSTERS, *APPS]
    up = {"postgres", "redis", "server", "label-consumer"}
    assert status == {name: "up" if name in up else "down" for name in status}

    stopped = devstack("down")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stderr.index("server: stopped") < stopped.stderr.index("postgres: stopped")
    assert _group_members(server) == []
    assert not port_open(settings.grpc_host, settings.grpc_port)
    assert not any(process_alive(pid, group=True) for pid in others)
    status = devstack("status").stdout.splitlines()
    assert all(line.split()[1] == "down" for line in status), status
