"""The local dev stack: `python -m devstack up|down|status|env [service ...]`.

Kafka (one KRaft broker), Postgres (a project-local cluster of Debian's PostgreSQL), MLflow
(server, SQLite backend), Airflow (the components of `airflow standalone`) and the analyst
console (uvicorn), bound to loopback, ports from Settings, state and logs under run/
(git-ignored). `up` is idempotent
and returns once every named service answers (no names: all, in order); `down` stops, in
reverse order, exactly what `up` started; a port already served by a process not started
here is used as it is and never stopped. `env` prints the export lines of the settings,
with the Kafka admin's login. The broker authenticates every client (SASL/SCRAM) and each
process of the stack logs in as its own principal (`fraudops.kafka_access`).
A service is one record in SERVICES: adding one is adding a record. The project's own
processes are records in APPS, started only when named: `up scorer` starts
`FRAUDOPS_SCORER_REPLICAS` stream scorers in one consumer group (their metrics on the ports
after the server's), sharing the Redis state, supervised as one service. The clusters
(`redis-cluster`: 3 Redis masters with a replica each; `kafka-cluster`: 3 KRaft brokers,
replication factor 3) are records in CLUSTERS, also started only when named.

Installing is not `up`'s job: `make install` resolves the Kafka jars, `.ci/run` installs
Debian's PostgreSQL; `up` fails naming the missing piece.

A small supervisor of our own rather than one from PyPI: supervisor (4.3) runs its own
daemon and knows readiness only as "still running after startsecs"; circus (0.19) brings
ZeroMQ and a daemon too, readiness left to hooks; honcho (2.0) runs a Procfile in the
foreground and has no detached services, readiness or ordering. None of them can use a
service already listening on its port. What is needed (a detached start in its own process
group, a readiness check per service, ordered start, stop by process group) is this module.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from fraudops import kafka_access
from fraudops.processes import process_alive, wait_until
from fraudops.settings import Settings, env_name, load_settings, to_environ, url_address

ROOT = Path(__file__).resolve().parents[1]
# Where `make kafka-jars` (a dependency of `make install`) puts the broker's jars.
KAFKA_LIBS = ROOT / "build" / "kafka" / "libs"
LOCK_TIMEOUT_S = 900
STOP_TIMEOUT_S = 30
LOG_TAIL_LINES = 30
ERROR_LINE = re.compile(r"\b(ERROR|FATAL)\b|Exception")  # a log line that names a cause
FIRST_ERRORS = 3


class StackError(Exception):
    """A service cannot be brought up; the message says why and where to look."""


def say(message: str) -> None:
    print(f"[devstack] {message}", file=sys.stderr, flush=True)


# --- generic helpers ---------------------------------------------------------------------


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def endpoint_address(endpoint: str) -> tuple[str, int]:
    """Host and port of a URL or of a bare host:port."""
    if "://" in endpoint:
        return url_address(endpoint)
    host, _, port = endpoint.split(",")[0].rpartition(":")
    return host, int(port)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The log's last lines, after its first error lines when those came earlier: a
    service that fails often logs its shutdown after the cause (Kafka does)."""
    try:
        logged = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    tail = logged[-lines:]
    earlier = [line for line in logged[:-lines] if ERROR_LINE.search(line)][:FIRST_ERRORS]
    if not earlier:
        return "\n".join(tail)
    return "\n".join(["first errors:", *earlier, "...", *tail])


# --- the stack and its services -----------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    """Where one dev stack lives: its settings, run directory and installed pieces."""

    settings: Settings
    run_dir: Path = ROOT / "run"
    kafka_libs: Path = KAFKA_LIBS
    root: Path = ROOT

    def dir(self, name: str) -> Path:
        return self.run_dir / name

    def log(self, name: str) -> Path:
        return self.run_dir / "logs" / f"{name}.log"

    def tool(self, name: str) -> Path:
        """An executable of the environment this module runs in (mlflow, airflow)."""
        path = Path(sys.executable).parent / name
        if not path.exists():
            raise StackError(f"{path} is missing: run `make install` first")
        return path

    def kafka_passwords(self) -> dict[str, str]:
        """The broker's principals and their passwords (run/kafka/credentials.json, made
        when the storage is formatted); empty before that."""
        try:
            return json.loads((self.dir("kafka") / "credentials.json").read_text())
        except FileNotFoundError:
            return {}

    def as_kafka_user(self, user: str | None) -> Settings:
        """The settings with `user`'s Kafka login (None: no login). A broker this stack did
        not make (no credentials here) keeps the login the settings carry."""
        passwords = self.kafka_passwords()
        if not passwords:
            return self.settings
        password = passwords.get(user) if user else None
        return replace(self.settings, kafka_sasl_username=password and user,
                       kafka_sasl_password=password)  # fmt: skip

    def environ(self, kafka_user: str | None = None) -> dict[str, str]:
        """The environment a service starts with: ours plus the stack's settings, logged in
        to Kafka as `kafka_user` (every process as its own principal; None: not at all)."""
        settings = to_environ(self.as_kafka_user(kafka_user))
        return {**os.environ, **settings, "FRAUDOPS_PROJECT_DIR": str(self.root)}


def with_local_kafka_login(settings: Settings, run_dir: Path = ROOT / "run") -> Settings:
    """`settings` logged in to the dev stack's broker as its admin, unless they carry a
    Kafka login of their own: the tests' and the benchmark's clients."""
    if settings.kafka_sasl_username:
        return settings
    return Stack(settings, run_dir).as_kafka_user(kafka_access.ADMIN)


def _nothing(stack: Stack) -> None:
    return None


def _no_environ(stack: Stack) -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class Service:
    """One service of the dev stack. `commands` are run detached in one process group of
    their own (several: supervised together, one exiting stops the rest); `ready` says
    whether it answers; `prepare` checks what it needs and does one-time set-up before a
    start; `after_ready` runs on every `up` (topics, role, migrations)."""

    name: str
    endpoint: Callable[[Settings], str]
    commands: Callable[[Stack], list[list[str]]]
    ready: Callable[[Stack], bool]
    prepare: Callable[[Stack], None] = _nothing
    after_ready: Callable[[Stack], None] = _nothing
    environ: Callable[[Stack], dict[str, str]] = _no_environ
    user: str | None = None  # the OS user it runs as when we are root
    stop_signal: int = signal.SIGTERM
    ready_timeout_s: float = 120
    listens: bool = True  # False: no port of its own (a consumer); judged by its process
    kafka_user: str | None = None  # its principal on the broker (fraudops.kafka_access)

    def address(self, settings: Settings) -> tuple[str, int]:
        return endpoint_address(self.endpoint(settings))

    def pidfile(self, stack: Stack) -> Path:
        return stack.dir(self.name) / f"{self.name}.pid"


# --- Kafka --------------------------------------------------------------------------------
# Clients authenticate with SASL/SCRAM-SHA-512 and ACLs decide what each may do
# (fraudops.kafka_access); the passwords are generated at the first `up` into
# run/kafka/credentials.json (mode 600) and given to each process of the stack as its own
# login; `env` exports admin's.


@dataclass(frozen=True)
class KafkaNode:
    """One broker (and controller) of the dev stack: its id, ports and home directory
    (server.properties, log4j2.properties, data/)."""

    node_id: int
    host: str
    port: int
    controller_port: int
    home: Path


def kafka_nodes(stack: Stack) -> list[KafkaNode]:
    """The one broker of `up kafka`."""
    host, port = stack.settings.kafka_address()
    return [KafkaNode(1, host, port, stack.settings.kafka_controller_port, stack.dir("kafka"))]


def kafka_cluster_nodes(stack: Stack) -> list[KafkaNode]:
    """The brokers of `up kafka-cluster`: kafka_cluster_port and the next ones, their
    controllers KAFKA_CONTROLLER_OFFSET above."""
    base = stack.settings.kafka_cluster_port
    return [
        KafkaNode(n, "127.0.0.1", base + n - 1, base + KAFKA_CONTROLLER_OFFSET + n - 1,
                  stack.dir("kafka-cluster") / str(n))
        for n in range(1, KAFKA_CLUSTER_BROKERS + 1)
    ]  # fmt: skip


KAFKA_CLUSTER_BROKERS = 3
KAFKA_CONTROLLER_OFFSET = 100


def _kafka_checks(stack: Stack) -> None:
    if not any(stack.kafka_libs.glob("*.jar")):
        raise StackError(
            f"the Kafka broker's jars are missing in {stack.kafka_libs}: run `make install` "
            "(its kafka-jars target resolves them from Maven Central)"
        )
    if shutil.which("java") is None:
        raise StackError("java not found: Java 17+ is needed (.ci/run installs it)")


def _kafka_prepare(stack: Stack, nodes: list[KafkaNode] | None = None) -> None:
    """server.properties from the template for each node; passwords and storage made once
    (every node of a cluster formatted with the same cluster id and controllers)."""
    _kafka_checks(stack)
    nodes = nodes or kafka_nodes(stack)
    for node in nodes:
        node.home.mkdir(parents=True, exist_ok=True)
        data = node.home / "data"
        if (data / "meta.properties").exists() and not stack.kafka_passwords():
            say(
                f"kafka: {data} was formatted without SASL users (an older dev stack); "
                "re-creating it empty (local dev data: its topics and messages are dropped)"
            )
            shutil.rmtree(data)
    _kafka_credentials(stack)
    for node in nodes:
        _write_private(node.home / "server.properties", kafka_properties(stack, node, nodes))
        log4j = stack.root / "infra" / "kafka" / "log4j2.properties"
        shutil.copy(log4j, node.home / "log4j2.properties")
    unformatted = [n for n in nodes if not (n.home / "data" / "meta.properties").exists()]
    if len(unformatted) == len(nodes):
        _kafka_format(stack, nodes)
    elif unformatted:
        raise StackError(f"kafka: {unformatted[0].home}/data is empty while other brokers of "
                         "the cluster hold data: remove them all to start afresh")  # fmt: skip


def _kafka_credentials(stack: Stack) -> None:
    """A random password for every principal that has none yet."""
    import secrets

    passwords = stack.kafka_passwords()
    missing = [user for user in kafka_access.PRINCIPALS if user not in passwords]
    if missing:
        passwords.update({user: secrets.token_urlsafe(24) for user in missing})
        _write_private(stack.dir("kafka") / "credentials.json", json.dumps(passwords, indent=1))


def kafka_properties(
    stack: Stack, node: KafkaNode | None = None, nodes: list[KafkaNode] | None = None
) -> str:
    """infra/kafka/server.properties for `node` of `nodes` (default: the one broker): its
    data directory, ports and id, every controller, the replication of a cluster of that
    size, and the admin password."""
    nodes = nodes or kafka_nodes(stack)
    node = node or nodes[0]
    text = (stack.root / "infra" / "kafka" / "server.properties").read_text()
    replicas = min(3, len(nodes))
    for key, value in {
        "@DATA_DIR@": str(node.home / "data"),
        "@HOST@": node.host,
        "@PORT@": str(node.port),
        "@CONTROLLER_PORT@": str(node.controller_port),
        "@NODE_ID@": str(node.node_id),
        "@QUORUM@": ",".join(f"{n.host}:{n.controller_port}" for n in nodes),
        "@REPLICAS@": str(replicas),
        "@MIN_ISR@": str(max(1, replicas - 1)),
        "@ADMIN_PASSWORD@": stack.kafka_passwords().get(kafka_access.ADMIN, ""),
    }.items():
        text = text.replace(key, value)
    return text


def _kafka_java(stack: Stack, home: Path, *args: str) -> list[str]:
    return ["java", f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
            "-cp", f"{stack.kafka_libs}/*", *args]  # fmt: skip


def _kafka_uuid() -> str:
    """A Kafka Uuid (16 random bytes, URL-safe base64 without padding; not starting with '-',
    which a command line would take for an option)."""
    import base64

    while True:
        text = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _kafka_format(stack: Stack, nodes: list[KafkaNode]) -> None:
    """Format each node's storage with admin's SCRAM credential (the brokers log in to each
    other with it, and the dev stack with it adds the other principals): one broker as a
    standalone controller, a cluster with every node as an initial controller."""
    tool, cluster_id = "kafka.tools.StorageTool", _kafka_uuid()
    admin = kafka_access.ADMIN
    scram = f"SCRAM-SHA-512=[name={admin},password={stack.kafka_passwords()[admin]}]"
    controllers = ",".join(f"{n.node_id}@{n.host}:{n.controller_port}:{_kafka_uuid()}"
                           for n in nodes)  # fmt: skip
    quorum = ["--standalone"] if len(nodes) == 1 else ["--initial-controllers", controllers]
    for node in nodes:
        say(f"kafka: formatting storage of node {node.node_id} (cluster id {cluster_id})")
        config = str(node.home / "server.properties")
        command = _kafka_java(stack, node.home, tool, "format", *quorum, "-t", cluster_id,
                              "-c", config, "--add-scram", scram)  # fmt: skip
        _run_logged(command, stack.log("kafka"), "kafka: storage format failed")


def kafka_node_command(stack: Stack, node: KafkaNode) -> list[str]:
    heap = ["-Xms512m", "-Xmx1g", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"]
    return [
        *_kafka_java(stack, node.home, *heap, "-Djava.awt.headless=true", "kafka.Kafka"),
        str(node.home / "server.properties"),
    ]


def _kafka_commands(stack: Stack) -> list[list[str]]:
    return [kafka_node_command(stack, node) for node in kafka_nodes(stack)]


def _kafka_admin(stack: Stack):
    from confluent_kafka.admin import AdminClient

    return AdminClient(stack.as_kafka_user(kafka_access.ADMIN).kafka_config())


def _kafka_ready(stack: Stack) -> bool:
    if not port_open(*stack.settings.kafka_address()):
        return False
    _kafka_admin(stack).list_topics(timeout=3)  # raises when the broker does not answer
    return True


def _kafka_setup(stack: Stack) -> None:
    """The settings' topics, then every principal and its ACLs on them."""
    admin_settings = stack.as_kafka_user(kafka_access.ADMIN)
    for name in kafka_access.ensure_topics(admin_settings, stack.settings.raw_partitions):
        say(f"kafka: created topic {name}")
    if stack.kafka_passwords():  # a broker of this stack (not one found on the port)
        kafka_access.add_users(admin_settings, stack.kafka_passwords())
        kafka_access.grant(admin_settings, stack.settings.topics())
    elif running_pid(KAFKA, stack) is not None:
        say("kafka: this broker was started by an older dev stack, without SASL users or "
            "ACLs; `down kafka` then `up kafka` makes it again with them")  # fmt: skip


KAFKA = Service(
    name="kafka",
    endpoint=lambda s: s.kafka_bootstrap_servers,
    commands=_kafka_commands,
    ready=_kafka_ready,
    prepare=_kafka_prepare,
    after_ready=_kafka_setup,
)


# --- Kafka, 3 brokers ---------------------------------------------------------------------
# `up kafka-cluster`: three KRaft nodes (each a broker and a controller) on loopback, data
# under run/kafka-cluster/<node>/, the one broker's logins (run/kafka/credentials.json) and
# ACLs; every partition on 3 brokers, min.insync.replicas 2, so with the project's producers
# (acks=all, idempotent) one broker may die without losing or stopping anything. Point the
# processes at it with KAFKA_BOOTSTRAP_SERVERS set to `local_kafka_cluster_bootstrap()`.


def on_kafka_cluster(stack: Stack) -> Stack:
    """The stack with its settings pointed at the 3-broker Kafka."""
    bootstrap = stack.settings.local_kafka_cluster_bootstrap()
    return replace(stack, settings=replace(stack.settings, kafka_bootstrap_servers=bootstrap))


KAFKA_CLUSTER = Service(
    name="kafka-cluster",
    endpoint=lambda s: s.local_kafka_cluster_bootstrap(),
    commands=lambda stack: [kafka_node_command(stack, n) for n in kafka_cluster_nodes(stack)],
    ready=lambda stack: (
        all(port_open(n.host, n.port) for n in kafka_cluster_nodes(stack))
        and _kafka_ready(on_kafka_cluster(stack))
    ),
    prepare=lambda stack: _kafka_prepare(stack, kafka_cluster_nodes(stack)),
    after_ready=lambda stack: _kafka_setup(on_kafka_cluster(stack)),
    ready_timeout_s=180,
)


# --- Postgres -----------------------------------------------------------------------------
# Trust authentication, on loopback and the socket only: a local development cluster
# reachable from this machine alone. Anything shared uses passwords (see .env.example).
PG_HBA = "local all all trust\nhost  all all 127.0.0.1/32 trust\n"
PG_CONF = """
# fraudops local development cluster (the devstack package); address, port and socket
# directory are given on the command line, from the settings.
max_connections = 100
shared_buffers = 256MB
fsync = on
synchronous_commit = on
max_wal_size = 2GB
log_min_duration_statement = 1000
"""


def _pg_bin() -> Path:
    """Debian's PostgreSQL binaries, the newest installed major version."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not found:
        raise StackError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin): .ci/run installs "
            "it; by hand: apt-get install -y postgresql"
        )
    return found[-1]


def _as_root() -> bool:
    return os.geteuid() == 0


def _user_kwargs(user: str | None) -> dict:
    """Popen arguments that run a child as `user` (PostgreSQL refuses to run as root)."""
    if user is None or not _as_root():
        return {}
    return {"user": user, "group": user, "extra_groups": []}


def _pg_traversable(directory: Path) -> None:
    """Let the postgres user reach `directory` (o+x on any parent that blocks it, from the
    root down, so that only the blocking ones change)."""
    for parent in reversed(directory.parents):
        reachable = subprocess.run(["test", "-x", str(parent)], **_user_kwargs("postgres"))
        if reachable.returncode != 0:
            say(f"postgres: chmod o+x {parent} so the postgres user can reach its data")
            parent.chmod(parent.stat().st_mode | 0o001)


def _pg_prepare(stack: Stack) -> None:
    """A cluster initialised once in run/postgres/data, owned by the postgres user."""
    home, data = stack.dir("postgres"), stack.dir("postgres") / "data"
    initdb = _pg_bin() / "initdb"
    home.mkdir(parents=True, exist_ok=True)
    if _as_root():
        shutil.chown(home, "postgres", "postgres")
        _pg_traversable(home)
    if (data / "PG_VERSION").exists():
        return
    say(f"postgres: initdb in {data}")
    command = [str(initdb), "-D", str(data), "-U", "postgres", "--encoding=UTF8",
               "--locale=C", "--auth=trust"]  # fmt: skip
    _run_logged(command, stack.log("postgres"), "postgres: initdb failed", user="postgres")
    (data / "pg_hba.conf").write_text(PG_HBA)
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(PG_CONF)


def _pg_commands(stack: Stack) -> list[list[str]]:
    home = stack.dir("postgres")
    return [
        [str(_pg_bin() / "postgres"), "-D", str(home / "data"),
         "-p", str(stack.settings.postgres_port), "-c", "listen_addresses=127.0.0.1",
         "-c", f"unix_socket_directories={home}"]
    ]  # fmt: skip


def _pg_superuser_url(stack: Stack) -> str:
    return f"postgresql://postgres@127.0.0.1:{stack.settings.postgres_port}/postgres"


def _pg_ready(stack: Stack) -> bool:
    import psycopg2

    if not port_open("127.0.0.1", stack.settings.postgres_port):
        return False
    psycopg2.connect(_pg_superuser_url(stack), connect_timeout=3).close()
    return True


def _pg_database(stack: Stack) -> None:
    """Role and database `fraudops` when missing, then the project's migrations."""
    import psycopg2

    conn = psycopg2.connect(_pg_superuser_url(stack), connect_timeout=10)
    conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = 'fraudops'")
            if cur.fetchone() is None:
                cur.execute("CREATE ROLE fraudops LOGIN CREATEDB")
            # Tests and benchmarks drop their databases WITH (FORCE) while sessions of the
            # services' own roles may still be closing: ending them needs this role.
            cur.execute("GRANT pg_signal_backend TO fraudops")
            cur.execute("SELECT 1 FROM pg_database WHERE datname = 'fraudops'")
            if cur.fetchone() is None:
                cur.execute("CREATE DATABASE fraudops OWNER fraudops")
    finally:
        conn.close()
    url = stack.settings.local_database_url()
    command = [sys.executable, "-m", "fraudops.db", "migrate", "--database-url", url]
    _run_logged(command, stack.log("postgres"), "postgres: migrations failed", cwd=stack.root)


POSTGRES = Service(
    name="postgres",
    endpoint=lambda s: s.local_database_url(),
    commands=_pg_commands,
    ready=_pg_ready,
    prepare=_pg_prepare,
    after_ready=_pg_database,
    user="postgres",
    # Fast shutdown: SIGTERM would wait for every client to disconnect.
    stop_signal=signal.SIGINT,
    ready_timeout_s=60,
)


# --- Redis --------------------------------------------------------------------------------
# The per-user online feature state. Append-only file fsynced every second, no snapshots:
# a crash of Redis itself can lose up to a second of history, which
# `fraudops-features rebuild` restores from Postgres.


def _redis_prepare(stack: Stack) -> None:
    if shutil.which("redis-server") is None:
        raise StackError("redis-server is not installed (apt-get install -y redis-server)")
    stack.dir("redis").mkdir(parents=True, exist_ok=True)


def _redis_url(settings: Settings) -> str:
    return settings.redis_url or settings.local_redis_url()


def _redis_commands(stack: Stack) -> list[list[str]]:
    host, port = url_address(_redis_url(stack.settings))
    return [
        ["redis-server", "--bind", host, "--port", str(port), "--dir", str(stack.dir("redis")),
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
         "--protected-mode", "yes", "--daemonize", "no"]
    ]  # fmt: skip


def _redis_ready(stack: Stack) -> bool:
    """PING answered with PONG (RESP over a plain socket: no client library needed here)."""
    try:
        with socket.create_connection(url_address(_redis_url(stack.settings)), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


REDIS = Service(
    name="redis",
    endpoint=_redis_url,
    commands=_redis_commands,
    ready=_redis_ready,
    prepare=_redis_prepare,
    ready_timeout_s=30,
)


# --- Redis Cluster ------------------------------------------------------------------------
# The per-user state past one node (`up redis-cluster`): 3 masters, each with 1 replica, on
# redis_cluster_port and the 5 ports after it, data under run/redis-cluster/<port>/. Started
# with `REDIS_URL=redis+cluster://...` (env prints it) the scoring processes use it; a master
# that dies is replaced by its replica within about cluster-node-timeout.
REDIS_CLUSTER_NODES = 6
REDIS_CLUSTER_NODE_TIMEOUT_MS = 1000


def redis_cluster_node_command(port: int, directory: Path) -> list[str]:
    """redis-server as one node of a cluster: loopback, its own directory, append-only file
    fsynced every second, no snapshots; a replica may be promoted without its master."""
    return ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory),
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(REDIS_CLUSTER_NODE_TIMEOUT_MS),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--protected-mode", "yes", "--daemonize", "no",
            "--logfile", str(directory / "redis.log")]  # fmt: skip


def form_redis_cluster(ports: list[int], timeout: float = 60) -> None:
    """Make running cluster-mode nodes one cluster (the first half masters, one replica
    each) unless they already are; returns once every slot is served by a master with a
    replica in sync (the scoring processes WAIT for the replicas they know of)."""
    if not _redis_cluster_ok(ports[0]):
        nodes = [f"127.0.0.1:{port}" for port in ports]
        command = ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "1",
                   "--cluster-yes"]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if result.returncode != 0 and not _redis_cluster_ok(ports[0]):
            raise StackError(f"redis-cli --cluster create failed:\n{result.stdout}{result.stderr}")
    wait_until(lambda: all(_redis_cluster_ok(p) for p in ports), "the Redis Cluster", timeout)
    wait_until(lambda: _redis_replicas_synced(ports[0]), "the Redis Cluster's replicas", timeout)


def _redis_replicas_synced(port: int) -> bool:
    """Every slot range lists a replica (CLUSTER SLOTS leaves out one still syncing)."""
    import redis

    with redis.Redis(port=port, socket_timeout=2) as client:
        return all(len(served) >= 4 for served in client.execute_command("CLUSTER SLOTS"))


def _redis_cluster_ok(port: int) -> bool:
    """CLUSTER INFO on the node reports cluster_state:ok (every slot served)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"CLUSTER INFO\r\n")
            return b"cluster_state:ok" in sock.recv(4096)
    except OSError:
        return False


def _redis_cluster_ports(settings: Settings) -> list[int]:
    return [settings.redis_cluster_port + n for n in range(REDIS_CLUSTER_NODES)]


def _redis_cluster_commands(stack: Stack) -> list[list[str]]:
    home = stack.dir("redis-cluster")
    return [
        redis_cluster_node_command(port, home / str(port))
        for port in _redis_cluster_ports(stack.settings)
    ]


def _redis_cluster_ready(stack: Stack) -> bool:
    return all(port_open("127.0.0.1", port) for port in _redis_cluster_ports(stack.settings))


def _redis_cluster_prepare(stack: Stack) -> None:
    _redis_prepare(stack)
    for port in _redis_cluster_ports(stack.settings):
        (stack.dir("redis-cluster") / str(port)).mkdir(parents=True, exist_ok=True)


REDIS_CLUSTER = Service(
    name="redis-cluster",
    endpoint=lambda s: f"127.0.0.1:{s.redis_cluster_port}",
    commands=_redis_cluster_commands,
    ready=_redis_cluster_ready,
    prepare=_redis_cluster_prepare,
    after_ready=lambda stack: form_redis_cluster(_redis_cluster_ports(stack.settings)),
    ready_timeout_s=30,
)


# --- MLflow -------------------------------------------------------------------------------


def _mlflow_prepare(stack: Stack) -> None:
    stack.tool("mlflow")
    stack.dir("mlflow").mkdir(parents=True, exist_ok=True)
    (stack.root / "mlruns").mkdir(exist_ok=True)


def _mlflow_commands(stack: Stack) -> list[list[str]]:
    host, port = url_address(stack.settings.mlflow_tracking_uri)
    return [
        [str(stack.tool("mlflow")), "server", "--host", host, "--port", str(port),
         "--workers", "1",
         "--backend-store-uri", f"sqlite:///{stack.dir('mlflow') / 'mlflow.db'}",
         "--artifacts-destination", str(stack.root / "mlruns"), "--serve-artifacts"]
    ]  # fmt: skip


MLFLOW = Service(
    name="mlflow",
    endpoint=lambda s: s.mlflow_tracking_uri,
    commands=_mlflow_commands,
    ready=lambda stack: http_ok(f"{stack.settings.mlflow_tracking_uri}/health"),
    prepare=_mlflow_prepare,
    # No job runner: its dozen huey workers would compete for the machine's 2 cores.
    environ=lambda stack: {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
)


# --- Airflow ------------------------------------------------------------------------------
# The components `airflow standalone` runs, started here instead because standalone starts
# the scheduler's and triggerer's log servers on every interface (0.0.0.0:8793/8794); with
# the LocalExecutor on one machine the API server reads task logs from disk, so they are
# skipped. SQLite metadata in run/airflow (the embedded default).


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds a secret)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _airflow_secret(stack: Stack, name: str) -> str:
    """A random secret generated once and kept in run/airflow (mode 600)."""
    import secrets

    path = stack.dir("airflow") / f".{name}"
    if not path.exists() or not path.read_text().strip():
        _write_private(path, secrets.token_hex(64) + "\n")
    return path.read_text().strip()


def _airflow_environ(stack: Stack) -> dict[str, str]:
    """The configuration of the local Airflow, as environment variables."""
    url = stack.settings.airflow_url
    host, port = url_address(url)
    auth = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    return {
        "AIRFLOW_HOME": str(stack.dir("airflow")),
        "AIRFLOW__CORE__DAGS_FOLDER": str(stack.root / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # Two cores: a few tasks at once, two per DAG run.
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "2",
        # Airflow 3's API server binds every interface unless told otherwise.
        "AIRFLOW__API__HOST": host,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": url,
        # Local demo only: SimpleAuthManager with every user an admin and no login page, on
        # a loopback-only server. A shared deployment configures real users (docker-compose).
        "AIRFLOW__CORE__AUTH_MANAGER": auth,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        # Signing keys generated once per run/ (Airflow's own default is too short for HS512).
        "AIRFLOW__API_AUTH__JWT_SECRET": _airflow_secret(stack, "jwt_secret"),
        "AIRFLOW__API__SECRET_KEY": _airflow_secret(stack, "secret_key"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def _airflow_prepare(stack: Stack) -> None:
    (stack.root / "dags").mkdir(exist_ok=True)
    environ = {**stack.environ(), **_airflow_environ(stack)}
    command = [str(stack.tool("airflow")), "db", "migrate"]
    _run_logged(command, stack.log("airflow"), "airflow: db migrate failed", env=environ)


def _airflow_commands(stack: Stack) -> list[list[str]]:
    airflow = str(stack.tool("airflow"))
    return [
        [airflow, "scheduler", "--skip-serve-logs"],
        [airflow, "dag-processor"],
        [airflow, "triggerer", "--skip-serve-logs"],
        [airflow, "api-server"],
    ]


def _airflow_ready(stack: Stack) -> bool:
    """The API answers and reports a live scheduler and DAG processor."""
    url = f"{stack.settings.airflow_url}/api/v2/monitor/health"
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            health = json.load(reply)
    except OSError:
        return False
    return all(health[c]["status"] == "healthy" for c in ("scheduler", "dag_processor"))


AIRFLOW = Service(
    name="airflow",
    endpoint=lambda s: s.airflow_url,
    commands=_airflow_commands,
    ready=_airflow_ready,
    prepare=_airflow_prepare,
    environ=_airflow_environ,
    ready_timeout_s=300,
)

# --- the analyst console ------------------------------------------------------------------


def _console_prepare(stack: Stack) -> None:
    if not (stack.root / "console" / "web" / "dist" / "index.html").exists():
        say("console: the frontend is not built (`make console-web`); the API serves alone")


CONSOLE = Service(
    name="console",
    endpoint=lambda s: s.console_url(),
    commands=lambda stack: [[sys.executable, "-m", "console", "serve"]],
    ready=lambda stack: http_ok(f"{stack.settings.console_url()}/api/health"),
    prepare=_console_prepare,
    ready_timeout_s=60,
    kafka_user="console",
)

SERVICES = {s.name: s for s in (KAFKA, POSTGRES, REDIS, MLFLOW, AIRFLOW, CONSOLE)}


# --- stream scorers -----------------------------------------------------------------------
# Replica n serves its metrics on metrics_port + 1 + n (the server keeps metrics_port); a
# consumer group spreads the topic's partitions over them, so more replicas than
# FRAUDOPS_RAW_PARTITIONS would leave the extra ones idle.


def scorer_metrics_ports(settings: Settings) -> list[int]:
    return [settings.metrics_port + 1 + n for n in range(settings.scorer_replicas)]


def _scorer_prepare(stack: Stack) -> None:
    s = stack.settings
    if s.metrics_port <= 0 or not 1 <= s.scorer_replicas <= s.raw_partitions:
        raise StackError(
            f"scorers need FRAUDOPS_METRICS_PORT > 0 (readiness is their metrics endpoint) "
            f"and 1 to {s.raw_partitions} FRAUDOPS_SCORER_REPLICAS (the topics' partitions); "
            f"got {s.metrics_port} and {s.scorer_replicas}"
        )


def _scorer_commands(stack: Stack) -> list[list[str]]:
    return [
        [sys.executable, "-m", "serving.scorer", "--metrics-port", str(port)]
        for port in scorer_metrics_ports(stack.settings)
    ]


def _scorers_ready(stack: Stack) -> bool:
    return all(
        http_ok(f"http://127.0.0.1:{port}/metrics") for port in scorer_metrics_ports(stack.settings)
    )


SCORER = Service(
    name="scorer",
    endpoint=lambda s: f"http://127.0.0.1:{s.metrics_port + 1}/metrics",
    commands=_scorer_commands,
    ready=_scorers_ready,
    prepare=_scorer_prepare,
    ready_timeout_s=60,
    kafka_user="scorer",
)

# The inline gRPC server and the label consumer: the rest of the live loop, for the demo.
SERVER = Service(
    name="server",
    endpoint=lambda s: f"{s.grpc_host}:{s.grpc_port}",
    commands=lambda stack: [[sys.executable, "-m", "serving.server"]],
    ready=lambda stack: port_open(stack.settings.grpc_host, stack.settings.grpc_port),
    ready_timeout_s=120,
    kafka_user="ingest",
)

LABEL_CONSUMER = Service(
    name="label-consumer",
    endpoint=lambda s: s.kafka_bootstrap_servers,
    commands=lambda stack: [[sys.executable, "-m", "serving.label_consumer"]],
    ready=lambda stack: True,  # once it runs; `status` says whether it still does
    listens=False,
    kafka_user="labels",
)

# Held-out transactions sent through the server at a modest rate, so the live screens move.
REPLAY_CALLER = "replay"


def _replay_environ(stack: Stack) -> dict[str, str]:
    """The replay's token: FRAUDOPS_CLIENT_TOKEN if set, else a new one for the caller
    `replay` (scope ingest; issuing it revokes the previous replay's token)."""
    if stack.settings.client_token:
        return {}
    from fraudops.db import connect
    from serving.callers import add_caller

    conn = connect(stack.settings.with_local_services().database_url)
    try:
        token = add_caller(conn, REPLAY_CALLER, ["ingest"], [])
    finally:
        conn.close()
    return {env_name("client_token"): token}


REPLAY = Service(
    name="replay",
    endpoint=lambda s: f"{s.grpc_host}:{s.grpc_port}",
    commands=lambda stack: [[sys.executable, str(stack.root / "scripts" / "replay.py")]],
    ready=lambda stack: True,
    environ=_replay_environ,
    listens=False,
)

APPS = {s.name: s for s in (SCORER, SERVER, LABEL_CONSUMER, REPLAY)}
# Started only when named (`up redis-cluster`): the single-node services stay the default.
CLUSTERS = {s.name: s for s in (REDIS_CLUSTER, KAFKA_CLUSTER)}


# --- processes ----------------------------------------------------------------------------


def _run_logged(command: list[str], log: Path, failure: str, user: str | None = None, **kw):
    """Run a set-up step to completion, its output appended to the service's log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        result = subprocess.run(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            **_user_kwargs(user), **kw,
        )  # fmt: skip
    if result.returncode != 0:
        raise StackError(f"{failure}; last lines of {log}:\n{log_tail(log)}")


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def running_pid(service: Service, stack: Stack) -> int | None:
    """The pid of the service as started here, if it is still running."""
    pid = _read_pid(service.pidfile(stack))
    return pid if pid is not None and process_alive(pid) else None


def _spawn(service: Service, stack: Stack) -> subprocess.Popen:
    """Start the service detached, in its own session and process group, so that a
    caller's exit or Ctrl-C does not take it down and `down` can stop all of it."""
    commands = service.commands(stack)
    if len(commands) > 1:
        commands = [[sys.executable, "-m", "devstack", "_group", json.dumps(commands)]]
    log = stack.log(service.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    service.pidfile(stack).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            commands[0], cwd=stack.root,
            env={**stack.environ(service.kafka_user), **service.environ(stack)},
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, **_user_kwargs(service.user),
        )  # fmt: skip
    service.pidfile(stack).write_text(f"{proc.pid}\n")
    return proc


def _answers(service: Service, stack: Stack) -> bool:
    try:
        return bool(service.ready(stack))
    except Exception:  # noqa: BLE001 - any failure of a probe means "not yet"
        return False


def up(service: Service, stack: Stack) -> None:
    """Bring one service up (or find it up) and wait until it answers."""
    name, endpoint = service.name, service.endpoint(stack.settings)
    proc = None
    pid = running_pid(service, stack)
    if pid is not None:
        say(f"{name}: already running (pid {pid})")
    elif service.listens and port_open(*service.address(stack.settings)):
        say(f"{name}: {endpoint} already in use by a process not started here; using it")
    else:
        service.prepare(stack)
        say(f"{name}: starting on {endpoint} (log: {stack.log(name)})")
        proc = _spawn(service, stack)
        pid = proc.pid

    def answers() -> bool:
        exited = proc.poll() if proc is not None else None
        if exited is not None or (pid is not None and not process_alive(pid)):
            log = stack.log(name)
            code = "" if exited is None else f" with code {exited}"
            raise StackError(
                f"{name} exited during start-up{code}; last lines of {log}:\n{log_tail(log)}"
            )
        return _answers(service, stack)

    try:
        wait_until(answers, f"{name} to answer", service.ready_timeout_s, every=0.5)
    except TimeoutError as err:
        log = stack.log(name)
        tail = log_tail(log)
        raise StackError(f"{name} not ready: {err}; last lines of {log}:\n{tail}") from None
    service.after_ready(stack)
    say(f"{name}: ready on {endpoint}")


def down(service: Service, stack: Stack) -> None:
    """Stop the process group this stack started for the service, and nothing else:
    its stop signal first, SIGKILL when it lingers."""
    pidfile = service.pidfile(stack)
    pid = running_pid(service, stack)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        if service.listens and port_open(*service.address(stack.settings)):
            say(f"{service.name}: not started here; left running")
        else:
            say(f"{service.name}: not running")
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, service.stop_signal)
    try:
        wait_until(
            lambda: not process_alive(pid, group=True), f"{service.name} to stop", STOP_TIMEOUT_S
        )
    except TimeoutError:
        say(f"{service.name}: still running after {STOP_TIMEOUT_S} s, killing")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
    say(f"{service.name}: stopped")


def status_line(service: Service, stack: Stack) -> str:
    endpoint = service.endpoint(stack.settings)
    pid = running_pid(service, stack)
    if not (port_open(*service.address(stack.settings)) if service.listens else pid):
        return f"{service.name:<14} down  {endpoint}"
    origin = f"pid {pid}" if pid is not None else "not started here"
    return f"{service.name:<14} up    {endpoint}  ({origin})"


def env_lines(settings: Settings) -> list[str]:
    """Export lines for a shell: `eval "$(python -m devstack env)"`."""
    return [f"export {k}={shlex.quote(v)}" for k, v in to_environ(settings).items()]


@contextlib.contextmanager
def locked(run_dir: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """One `up`/`down` at a time: sessions starting together must not start two brokers.
    Services are started without this descriptor (close_fds), so they never hold it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".services.lock", "w") as lock:

        def acquired() -> bool:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        try:
            wait_until(acquired, "the dev stack lock", timeout, every=0.2)
        except TimeoutError:
            raise StackError(f"another devstack up/down still runs after {timeout} s") from None
        yield


def run_group(commands: list[list[str]]) -> int:
    """Supervise several commands as one service (Airflow's components): when one exits,
    or on SIGTERM, stop the others and wait for them."""
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    procs = [subprocess.Popen(c) for c in commands]
    while not stopping and all(p.poll() is None for p in procs):
        time.sleep(0.5)
    for p in procs:
        if p.poll() is not None and not stopping:
            say(f"{shlex.join(p.args[1:])} exited ({p.returncode}); stopping the others")
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            p.kill()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "env", "_group"])
    parser.add_argument(
        "services", nargs="*",
        help=f"default: up starts {', '.join(SERVICES)}; down and status also cover "
        f"{', '.join(APPS)}; named only: {', '.join(CLUSTERS)}",
    )  # fmt: skip
    parser.add_argument("--run-dir", type=Path, default=ROOT / "run")
    parser.add_argument("--kafka-libs", type=Path, default=KAFKA_LIBS)
    args = parser.parse_args(argv)
    if args.command == "_group":
        return run_group(json.loads(args.services[0]))
    known = {**SERVICES, **CLUSTERS, **APPS}
    unknown = [n for n in args.services if n not in known]
    if unknown:
        parser.error(f"unknown service {unknown[0]!r} (one of: {', '.join(known)})")
    # No names: `up` starts the services; `down` and `status` cover the apps as well, so
    # nothing `up NAME` started outlives `down` (the apps stop first: reversed order).
    chosen = [known[n] for n in args.services or (SERVICES if args.command == "up" else known)]
    settings = load_settings().with_local_services()
    stack = Stack(settings, args.run_dir.resolve(), args.kafka_libs.resolve())
    if args.command == "env":
        print("\n".join(env_lines(stack.as_kafka_user(kafka_access.ADMIN))))
    elif args.command == "status":
        print("\n".join(status_line(s, stack) for s in chosen))
    else:
        try:
            with locked(stack.run_dir):
                if args.command == "up":
                    for service in chosen:
                        up(service, stack)
                else:  # Airflow and MLflow may be writing to the others while they stop.
                    for service in reversed(chosen):
                        down(service, stack)
        except StackError as err:
            say(f"ERROR: {err}")
            return 1
    return 0
