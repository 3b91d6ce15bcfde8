"""docker-compose.yml, checked without a container engine: valid against the Compose
Specification's schema (kept in shared/ beside the repository), and consistent with the
settings the services read."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path

import jsonschema
import pytest
import yaml

from fraudops import kafka_access
from fraudops.settings import Settings, env_name, url_address

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"
APP_SERVICES = {"migrate", "server", "scorer", "airflow", "console"}
SETTINGS_ENV = {env_name(f.name) for f in fields(Settings)}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_valid_against_compose_spec(compose):
    if not SCHEMA.is_file():
        pytest.fail(f"{SCHEMA} is missing: CI clones the repository with shared/ beside it")
    schema = yaml.safe_load(SCHEMA.read_text())  # JSON is YAML; one loader
    jsonschema.Draft7Validator(schema).validate(compose)


def test_the_whole_stack_is_there(compose):
    infrastructure = {"kafka", "kafka-setup", "postgres", "redis", "mlflow", "airflow"}
    assert infrastructure | APP_SERVICES <= set(compose["services"])


def test_scorer_replicas_share_one_consumer_group(compose):
    scorer = compose["services"]["scorer"]
    assert scorer["deploy"]["replicas"] >= 2
    assert scorer["environment"]["FRAUDOPS_CONSUMER_GROUP"] == Settings.consumer_group
    assert "ports" not in scorer  # replicas cannot share a host port


@pytest.mark.parametrize("service", sorted(APP_SERVICES))
def test_app_environment_uses_settings_names(compose, service):
    environment = compose["services"][service]["environment"]
    fraudops_names = {n for n in environment if n.startswith("FRAUDOPS_")}
    assert fraudops_names - {"FRAUDOPS_PROJECT_DIR"} <= SETTINGS_ENV
    assert {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "MLFLOW_TRACKING_URI"} <= set(environment)


def test_published_ports_bind_loopback_only(compose):
    published = [
        (name, str(port))
        for name, service in compose["services"].items()
        for port in service.get("ports", [])
    ]
    for name, port in published:
        assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
    assert ("server", f"127.0.0.1:{Settings.grpc_port}:{Settings.grpc_port}") in published


def test_env_example_lists_every_interpolated_variable(compose):
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))
    example = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert used <= example, f"missing from .env.example: {sorted(used - example)}"


def test_kafka_setup_creates_the_settings_topics_and_every_principal(compose):
    setup = compose["services"]["kafka-setup"]
    assert setup["command"][:3] == ["python", "-m", "fraudops.kafka_access"]
    environment = setup["environment"]
    assert environment["KAFKA_SASL_USERNAME"] == kafka_access.ADMIN
    assert {kafka_access.password_variable(user) for user in kafka_access.GRANTS} <= set(
        environment
    )


# Each process that talks to Kafka logs in as its own principal.
PRINCIPALS = {"server": "ingest", "scorer": "scorer", "label-consumer": "labels",
              "stripe": "stripe", "stripe-consumer": "stripe", "console": "console"}  # fmt: skip


@pytest.mark.parametrize(("service", "user"), sorted(PRINCIPALS.items()))
def test_each_kafka_client_logs_in_as_its_own_principal(compose, service, user):
    environment = compose["services"][service]["environment"]
    assert environment["KAFKA_SASL_USERNAME"] == user
    variable = kafka_access.password_variable(user)
    assert environment["KAFKA_SASL_PASSWORD"].startswith(f"${{{variable}:?")


def test_the_broker_uses_the_dev_stacks_template(compose):
    kafka = compose["services"]["kafka"]
    assert "./infra/kafka/server.properties:/etc/fraudops/server.properties:ro" in kafka["volumes"]
    script = " ".join(kafka["command"])
    template = (ROOT / "infra" / "kafka" / "server.properties").read_text()
    for placeholder in set(re.findall(r"@[A-Z_]+@", template)):
        assert re.search(rf'"s\|{placeholder}\|[^"|]+\|g"', script), placeholder  # every one
    assert f"s|@PORT@|{Settings().kafka_address()[1]}|g" in script
    assert "--add-scram" in script


def _published(compose: dict, service: str) -> list[str]:
    return [str(p) for p in compose["services"][service]["ports"]]


def test_published_ports_are_the_settings_ports(compose):
    settings = Settings()
    expected = {
        "mlflow": url_address(settings.mlflow_tracking_uri)[1],
        "airflow": url_address(settings.airflow_url)[1],
        "server": settings.grpc_port,
        "console": settings.console_port,
    }
    for service, port in expected.items():
        assert f"127.0.0.1:{port}:{port}" in _published(compose, service), service
    postgres = f"127.0.0.1:${{POSTGRES_HOST_PORT:-{settings.postgres_port}}}:5432"
    assert postgres in _published(compose, "postgres")


def test_console_image_carries_its_built_frontend(compose):
    """The console runs from the installed package, so the frontend must be package data
    built inside the image: a Node stage builds it from the lockfile, the final stage puts
    it beside the console's modules before `pip install`, and compose mounts none over it."""
    console = compose["services"]["console"]
    assert console["build"]["args"]["INSTALL_GROUP"] == "serving,console"
    assert not any("console/web" in str(v) for v in console.get("volumes", []))
    assert "./models:/app/models" in console["volumes"]  # writable: an admin's rollback
    lines = [ln.split() for ln in (ROOT / "Dockerfile").read_text().splitlines() if ln.strip()]
    stage = next(ln[3] for ln in lines if ln[0] == "FROM" and ln[1].startswith("node:"))
    steps = [" ".join(ln) for ln in lines]
    assert "COPY console/web/package.json console/web/package-lock.json ./" in steps
    assert "RUN npm ci --no-audit --no-fund" in steps and "RUN npm run build" in steps
    copied = steps.index(f"COPY --from={stage} /web/dist ./console/web/dist")
    assert copied < steps.index('RUN pip install ".[${INSTALL_GROUP}]"')
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "web/dist/*" in package_data["package-data"]["console"]
    assert "migrations/*.sql" in package_data["package-data"]["fraudops.db"]
    assert "console/web/dist" in (ROOT / ".dockerignore").read_text().split()


def test_the_cluster_profile_is_a_redis_cluster_of_three_masters_and_three_replicas(compose):
    """`--profile cluster`: six cluster-mode nodes, formed with a replica each; nothing of
    it starts without the profile."""
    services = compose["services"]
    nodes = [n for n in services if n.startswith("redis-node-")]
    assert len(nodes) == 6
    for name in nodes:
        assert services[name]["profiles"] == ["cluster"]
        assert "--cluster-enabled" in services[name]["command"]
    create = services["redis-cluster-create"]
    assert create["profiles"] == ["cluster"]
    assert "--cluster-replicas 1" in create["command"][0]
    assert set(create["depends_on"]) == set(nodes)


def test_images_carry_the_pinned_ip_country_database():
    """The image fetches the IP country database at build time with the Makefile's pin (one
    version, not two that drift) and installs it where the settings look for it."""
    makefile = (ROOT / "Makefile").read_text()
    pins = dict(re.findall(r"^(GEOIP_PACKAGE|GEOIP_VERSION) := (\S+)$", makefile, re.M))
    dockerfile = (ROOT / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (GEOIP_PACKAGE|GEOIP_VERSION)=(\S+)$", dockerfile, re.M))
    assert args == pins and len(pins) == 2
    assert "python -m fraudops.geoip install" in dockerfile
    assert f"--dest {Settings().geoip_db}" in dockerfile
