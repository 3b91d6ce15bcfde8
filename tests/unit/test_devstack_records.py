"""The dev stack's service records, without starting anything: every address comes from
the settings, every server binds loopback, and `env` is the settings' inverse."""

from __future__ import annotations

import shlex
import stat
from dataclasses import replace
from pathlib import Path

import pytest

import devstack
from fraudops import kafka_access
from fraudops.settings import Settings, load_settings

MOVED = replace(
    Settings(),
    kafka_bootstrap_servers="127.0.0.1:19092",
    kafka_controller_port=19093,
    postgres_port=15432,
    redis_port=16379,
    mlflow_tracking_uri="http://127.0.0.1:15000",
    airflow_url="http://127.0.0.1:18080",
    console_port=18000,
)
MOVED_PORTS = {"kafka": 19092, "postgres": 15432, "redis": 16379, "mlflow": 15000, "airflow": 18080,
               "console": 18000}  # fmt: skip


@pytest.fixture
def stack(tmp_path: Path) -> devstack.Stack:
    return devstack.Stack(MOVED, run_dir=tmp_path / "run", kafka_libs=tmp_path / "libs")


def test_the_stack_has_its_services_in_start_order():
    assert list(devstack.SERVICES) == ["kafka", "postgres", "redis", "mlflow", "airflow", "console"]


@pytest.mark.parametrize("name", sorted(MOVED_PORTS))
def test_each_address_follows_the_settings(name):
    service = devstack.SERVICES[name]
    assert service.address(MOVED) == ("127.0.0.1", MOVED_PORTS[name])
    assert service.address(Settings()) != service.address(MOVED)


@pytest.mark.parametrize("name", sorted(MOVED_PORTS))
def test_state_lives_under_the_run_directory(stack, name):
    service = devstack.SERVICES[name]
    assert service.pidfile(stack).is_relative_to(stack.run_dir)
    assert stack.log(name).is_relative_to(stack.run_dir)


def test_kafka_properties_carry_the_settings_ports_and_nothing_left_to_fill(stack):
    text = devstack.kafka_properties(stack)
    settings_lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert not [line for line in settings_lines if "@" in line]
    assert "listeners=BROKER://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093" in text
    assert "listener.security.protocol.map=BROKER:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT" in text
    assert f"log.dirs={stack.run_dir / 'kafka' / 'data'}" in text
    assert "auto.create.topics.enable=false" in text


def test_postgres_command_binds_loopback_on_the_settings_port(stack, monkeypatch):
    monkeypatch.setattr(devstack, "_pg_bin", lambda: Path("/usr/lib/postgresql/99/bin"))
    (command,) = devstack.POSTGRES.commands(stack)
    assert command[command.index("-p") + 1] == "15432"
    assert "listen_addresses=127.0.0.1" in command


def test_mlflow_command_binds_loopback_and_runs_no_job_runner(stack, monkeypatch):
    monkeypatch.setattr(devstack.Stack, "tool", lambda self, name: Path("/venv/bin") / name)
    (command,) = devstack.MLFLOW.commands(stack)
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "15000"
    assert devstack.MLFLOW.environ(stack)["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_airflow_binds_loopback_with_secrets_generated_once(stack, monkeypatch):
    monkeypatch.setattr(devstack.Stack, "tool", lambda self, name: Path("/venv/bin") / name)
    environ = devstack.AIRFLOW.environ(stack)
    assert (environ["AIRFLOW__API__HOST"], environ["AIRFLOW__API__PORT"]) == ("127.0.0.1", "18080")
    assert environ["AIRFLOW__API__BASE_URL"] == MOVED.airflow_url
    assert environ["AIRFLOW__CORE__AUTH_MANAGER"].endswith("SimpleAuthManager")
    assert len(environ["AIRFLOW__API_AUTH__JWT_SECRET"]) == 128
    assert devstack.AIRFLOW.environ(stack) == environ  # the same secrets the second time
    secret = stack.dir("airflow") / ".jwt_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    components = [c[1] for c in devstack.AIRFLOW.commands(stack)]
    assert components == ["scheduler", "dag-processor", "triggerer", "api-server"]


def test_env_lines_are_the_settings_inverse():
    settings = MOVED.with_local_services()
    exported = {}
    for line in devstack.env_lines(settings):
        name, _, value = line.removeprefix("export ").partition("=")
        exported[name] = " ".join(shlex.split(value))
    assert load_settings(exported) == settings


def test_unknown_service_is_refused(capsys):
    with pytest.raises(SystemExit):
        devstack.main(["up", "zookeeper"])
    assert "unknown service 'zookeeper'" in capsys.readouterr().err


def test_a_missing_jar_directory_is_named(stack):
    with pytest.raises(devstack.StackError, match="make install"):
        devstack.KAFKA.prepare(stack)


def test_scorer_replicas_are_one_service_with_a_metrics_port_each(stack):
    three = devstack.Stack(replace(MOVED, scorer_replicas=3, metrics_port=19108), stack.run_dir)
    commands = devstack.SCORER.commands(three)
    assert [c[1:3] for c in commands] == [["-m", "serving.scorer"]] * 3
    assert [c[-1] for c in commands] == ["19109", "19110", "19111"]  # the server keeps 19108
    assert devstack.SCORER.address(three.settings) == ("127.0.0.1", 19109)
    assert "scorer" not in devstack.SERVICES  # started only when named


@pytest.mark.parametrize("overrides", [{"scorer_replicas": 0}, {"scorer_replicas": 4},
                                       {"metrics_port": 0}])  # fmt: skip
def test_scorer_replicas_beyond_the_partitions_or_without_metrics_are_refused(stack, overrides):
    bad = devstack.Stack(replace(MOVED, **overrides), stack.run_dir)
    with pytest.raises(devstack.StackError, match="FRAUDOPS_SCORER_REPLICAS"):
        devstack.SCORER.prepare(bad)


def test_a_log_tail_keeps_the_first_errors_that_scrolled_past(tmp_path):
    log = tmp_path / "kafka.log"
    noise = [f"INFO shutting down component {i}" for i in range(100)]
    cause = "org.apache.kafka.common.KafkaException: failed to bind: Address already in use"
    log.write_text("\n".join(["INFO starting", cause, *noise]) + "\n")
    tail = devstack.log_tail(log, lines=10)
    assert cause in tail and tail.splitlines()[-1] == noise[-1]
    assert "component 50" not in tail
    quiet = tmp_path / "quiet.log"
    quiet.write_text("\n".join(noise))
    assert devstack.log_tail(quiet, lines=10).splitlines() == noise[-10:]


def test_each_process_of_the_stack_logs_in_to_kafka_as_its_own_principal(stack):
    devstack._kafka_credentials(stack)
    passwords = stack.kafka_passwords()
    assert set(passwords) == {"admin", *kafka_access.GRANTS}
    assert len(set(passwords.values())) == len(passwords)
    assert stat.S_IMODE((stack.dir("kafka") / "credentials.json").stat().st_mode) == 0o600
    principals = {s.name: s.kafka_user for s in {**devstack.SERVICES, **devstack.APPS}.values()}
    assert principals["server"] == "ingest" and principals["scorer"] == "scorer"
    for name, user in principals.items():
        environ = stack.environ(user)
        assert environ["KAFKA_SASL_USERNAME"] == (user or ""), name
        assert environ["KAFKA_SASL_PASSWORD"] == passwords.get(user, ""), name
    devstack._kafka_credentials(stack)
    assert stack.kafka_passwords() == passwords  # generated once
    assert f'password="{passwords["admin"]}"' in devstack.kafka_properties(stack)


def test_a_broker_not_made_by_the_stack_keeps_the_settings_login(stack):
    given = replace(MOVED, kafka_sasl_username="someone", kafka_sasl_password="theirs")
    elsewhere = devstack.Stack(given, run_dir=stack.run_dir)
    assert elsewhere.as_kafka_user("scorer") == given
    assert devstack.with_local_kafka_login(MOVED, stack.run_dir) == MOVED  # no login to give
