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

import devstack
from fraudops import kafka_access
from fraudops.settings import Settings, env_name, url_address

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"
APP_SERVICES = {"migrate", "server", "scorer", "airflow", "console"}
SETTINGS_ENV = {env_name(f.name) for f in fields(Settings)}
CLUSTER_BROKERS = ["kafka-1", "kafka-2", "kafka-3"]
BROKER_PORT, CONTROLLER_PORT = 9092, 9093


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


@pytest.mark.parametrize("broker", ["kafka", *CLUSTER_BROKERS])
def test_the_broker_uses_the_dev_stacks_template(compose, broker):
    kafka = compose["services"][broker]
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


def _broker_properties(compose: dict, broker: str) -> dict[str, str]:
    """The server.properties a broker's start script writes: the template with its sed
    substitutions, their values taken from the service's environment."""
    service = compose["services"][broker]
    text = (ROOT / "infra" / "kafka" / "server.properties").read_text()
    script = " ".join(service["command"])
    for placeholder, value in re.findall(r'"s\|(@[A-Z_]+@)\|([^"|]+)\|g"', script):
        value = re.sub(r"\$\$\{(\w+)\}", lambda m: str(service["environment"][m[1]]), value)
        text = text.replace(placeholder, value)
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return dict(ln.split("=", 1) for ln in lines)


def test_the_cluster_profile_is_three_kafka_brokers_of_one_quorum(compose):
    """`--profile cluster`: three KRaft nodes, each a broker and a controller listening on
    its own service name, every one a voter of the one quorum, formatted with the same
    cluster id and initial controllers; the single broker is left as it is."""
    services = compose["services"]
    assert sorted(n for n in services if re.fullmatch(r"kafka-\d+", n)) == CLUSTER_BROKERS
    voters = [f"{name}:{CONTROLLER_PORT}" for name in CLUSTER_BROKERS]
    formats = set()
    for node_id, name in enumerate(CLUSTER_BROKERS, start=1):
        service = services[name]
        assert service["profiles"] == ["cluster"]
        assert service["command"] == services["kafka"]["command"]  # one start script
        properties = _broker_properties(compose, name)
        assert properties["node.id"] == str(node_id)
        assert properties["process.roles"] == "broker,controller"
        assert properties["listeners"] == (
            f"BROKER://{name}:{BROKER_PORT},CONTROLLER://{name}:{CONTROLLER_PORT}"
        )
        assert properties["advertised.listeners"] == properties["listeners"]
        assert properties["controller.quorum.bootstrap.servers"].split(",") == voters
        environment = service["environment"]
        formats.add((environment["BROKER_FORMAT_QUORUM"], environment["BROKER_CLUSTER_ID"]))
    (format_quorum, cluster_id), = formats  # fmt: skip
    option, controllers = format_quorum.split()
    assert option == "--initial-controllers"
    parsed = [re.fullmatch(r"(\d+)@([\w-]+:\d+):([\w-]{22})", c) for c in controllers.split(",")]
    assert [(int(m[1]), m[2]) for m in parsed] == list(enumerate(voters, start=1))
    assert len({m[3] for m in parsed}) == 3  # a directory id of its own per controller
    assert cluster_id != services["kafka"]["environment"]["BROKER_CLUSTER_ID"]
    assert len({v for b in CLUSTER_BROKERS for v in services[b]["volumes"]}) == 4  # data apart


def test_the_cluster_brokers_replicate_as_the_dev_stacks_cluster(compose, tmp_path):
    """Replication factor 3 and min.insync.replicas 2 (so one broker may die without losing
    an acks=all write), and every other setting the dev stack's own 3 brokers have; the one
    broker keeps 1 and 1."""
    stack = devstack.Stack(Settings(), run_dir=tmp_path / "run", kafka_libs=tmp_path / "libs")
    nodes = devstack.kafka_cluster_nodes(stack)
    local_only = ("listeners", "advertised.listeners", "controller.quorum.bootstrap.servers",
                  "log.dirs", "listener.name.")  # fmt: skip
    for name, node in zip(CLUSTER_BROKERS, nodes, strict=True):
        text = devstack.kafka_properties(stack, node, nodes)
        local = dict(ln.split("=", 1) for ln in text.splitlines() if ln and ln[0] != "#")
        ours = _broker_properties(compose, name)
        assert ours.keys() == local.keys()
        for key in (k for k in local if not k.startswith(local_only)):
            assert ours[key] == local[key], key
        assert ours["default.replication.factor"] == "3"
        assert ours["min.insync.replicas"] == ours["transaction.state.log.min.isr"] == "2"
    single = _broker_properties(compose, "kafka")
    assert single["default.replication.factor"] == single["min.insync.replicas"] == "1"


def test_the_services_can_point_at_the_cluster(compose):
    """One variable moves every Kafka client, the set-up job included, to the cluster (and
    one the scoring processes to the Redis Cluster); the set-up waits for the cluster's
    brokers when the profile runs them. .env.example says what to set."""
    services = compose["services"]
    bootstrap = "${STACK_KAFKA_BOOTSTRAP_SERVERS:-kafka:9092}"
    for name in ["kafka-setup", *APP_SERVICES]:
        assert services[name]["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == bootstrap, name
    setup = services["kafka-setup"]["depends_on"]
    for name in CLUSTER_BROKERS:
        assert setup[name] == {"condition": "service_healthy", "required": False}
    for name in ("server", "scorer"):
        assert (
            services[name]["environment"]["REDIS_URL"] == "${STACK_REDIS_URL:-redis://redis:6379/0}"
        )
        assert services[name]["depends_on"]["redis-cluster-create"]["required"] is False
    example = (ROOT / ".env.example").read_text()
    cluster = ",".join(f"{name}:{BROKER_PORT}" for name in CLUSTER_BROKERS)
    assert f"#   STACK_KAFKA_BOOTSTRAP_SERVERS={cluster}\n" in example
    assert "#   STACK_REDIS_URL=redis+cluster://redis-node-1:6379/0\n" in example


def test_no_default_service_needs_a_profiled_one(compose):
    """A service without a profile that requires one of the `cluster` profile makes the
    whole project invalid without that profile: such a dependency must be optional."""
    services = compose["services"]
    for name, service in services.items():
        if "profiles" in service:
            continue
        for dependency, condition in (service.get("depends_on") or {}).items():
            if "profiles" in services[dependency]:
                assert condition.get("required") is False, f"{name} needs {dependency}"


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


def test_every_kafka_client_waits_for_its_topics_and_schema_and_restarts(compose):
    """A service logging in to Kafka starts once kafka-setup made its topics and ACLs and
    migrate its tables, and a long-running one comes back after a crash."""
    services = compose["services"].items()
    clients = {n: s for n, s in services if "KAFKA_SASL_USERNAME" in s.get("environment", {})}
    clients.pop("kafka-setup")
    assert {"server", "scorer", "label-consumer", "stripe", "stripe-consumer"} <= set(clients)
    for name, service in clients.items():
        waits = service.get("depends_on", {})
        for setup in ("migrate", "kafka-setup"):
            assert waits.get(setup, {}).get("condition") == "service_completed_successfully", (
                f"{name} does not wait for {setup}"
            )
        assert service.get("restart") == "unless-stopped", f"{name} does not restart"
