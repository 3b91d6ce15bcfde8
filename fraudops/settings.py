"""Runtime endpoints and knobs, read from the environment once when a process starts
(never at import). Pipeline parameters live in params.yaml instead (see fraudops.params).

This module is the one place that names a topic or an endpoint: everything else reads a
field, builds a subprocess's environment with `to_environ` (the inverse of
`load_settings`), and creates the topics `Settings.topics` lists."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # This process's Kafka principal (SASL/SCRAM); no user: an unauthenticated connection,
    # which the dev stack's broker and docker-compose's refuse.
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = field(default=None, repr=False)  # never logged
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    database_url: str | None = None  # None: no database (collect_feedback reads nothing)
    redis_url: str | None = None  # None: per-user feature state in each process's memory
    mlflow_tracking_uri: str = "http://127.0.0.1:5000"
    airflow_url: str = "http://127.0.0.1:8080"
    model_dir: Path = Path("models/serving")
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    metrics_port: int = 9108
    server_workers: int = 1  # fraudops-serve processes sharing the gRPC port (SO_REUSEPORT)
    # Concurrent inline Score calls scored as one batch (serving/batching.py): at most this
    # many, and how long a call arriving at an idle scorer waits for others (0: not at all;
    # calls still gather while the batch before theirs is scored).
    inline_batch_max: int = 64
    inline_batch_window_us: int = 0
    scorer_replicas: int = 1  # stream scorers the dev stack starts, in one consumer group
    # Partitions of topic_raw. The producers place a user by Kafka's default partitioner
    # (murmur2 of the key); the feature state hash-tags a user's keys with the same
    # partition, so a scorer's micro-batch from one partition is one Redis Cluster slot.
    raw_partitions: int = 3
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    consumer_group: str = "fraudops-scorer"
    topic_raw: str = "raw_transactions"
    topic_scores: str = "transaction_scores"
    topic_labels: str = "transaction_labels"
    topic_dlq: str = "raw_transactions.dlq"
    topic_labels_dlq: str = "transaction_labels.dlq"
    topic_inline_dlq: str = "inline_scores.dlq"
    topic_stripe_events: str = "stripe_events"  # verified Stripe webhook events, as received
    topic_stripe_events_dlq: str = "stripe_events.dlq"
    # The Stripe integration (integrations/stripe): its HTTP endpoint, the webhook endpoint
    # secrets (whsec_..., comma-separated: the new one beside the old while rotating) and
    # the key a checkout sends in X-Api-Key to ask for a decision.
    stripe_host: str = "127.0.0.1"
    stripe_port: int = 8010
    stripe_webhook_secrets: str | None = None
    stripe_decide_api_key: str | None = None
    # gRPC callers (serving/callers.py): the methods open without credentials (comma-separated,
    # of SendTransaction, Score, ScoreBatch; never SubmitLabel), how often each server process
    # reloads the callers from Postgres (the longest a revoke takes to bite), and the token a
    # project client (replay, the benchmark) sends.
    grpc_anonymous_methods: str = ""
    caller_refresh_s: float = 5.0
    client_token: str | None = None
    # Label sources the label consumer accepts from `transaction_labels` (globs): the broker's
    # ACLs decide who may write that topic, this decides what they may write.
    kafka_label_sources: str = "stripe:*,chargeback:*"
    min_event_ts: int = 946_684_800  # 2000-01-01: an earlier transaction timestamp is refused
    max_event_ts_ahead_s: int = 300  # and so is one further ahead of the validating clock
    scorer_batch_size: int = 2000
    scorer_poll_seconds: float = 0.05
    # How long the stream scorer waits for Kafka to acknowledge a batch's scores (its
    # producer's message.timeout.ms too). Past it the batch's offsets stay uncommitted and the
    # scorer consumes again from the last durable ones; long enough for a broker failover.
    scorer_delivery_timeout_s: float = 30.0
    # Share of scored transactions whose feature vector is kept (feature_samples) for the
    # drift watch's online-vs-batch skew check; chosen by transaction id, so every process
    # and a redelivery agree.
    feature_sample_rate: float = 0.01
    # How often a scoring process looks for a new rule set or list change (fraudops.rules).
    rules_poll_seconds: float = 0.25
    log_level: str = "INFO"
    # The IP country database (`make geoip-db` places it); a missing file leaves every
    # address unknown. Replacing the file swaps it into running processes.
    geoip_db: Path = Path("build/geoip/geo-whois-asn-country.mmdb")
    # The key of the IP addresses' keyed hash (fraudops.geoip.ip_hash); unset: no hash kept.
    ip_hash_key: str | None = field(default=None, repr=False)  # never logged
    # The project-local dev stack (the devstack package): its Postgres cluster and the KRaft
    # controller listener of its one broker (the broker's own port is in the bootstrap).
    postgres_port: int = 55432
    kafka_controller_port: int = 9093
    # The dev stack's 3-broker Kafka (`devstack up kafka-cluster`): brokers on this port and
    # the next two, their controllers 100 above.
    kafka_cluster_port: int = 39092
    redis_port: int = 56379
    # The dev stack's Redis Cluster (`devstack up redis-cluster`): REDIS_CLUSTER_NODES
    # nodes on this port and the next ones (at most 55535: each node also listens on its
    # port + 10000 for the cluster bus).
    redis_cluster_port: int = 37001
    # The analyst console (console/): where it listens and how long its grants last.
    console_host: str = "127.0.0.1"
    console_port: int = 8000
    console_session_ttl_s: int = 8 * 3600
    console_claim_ttl_s: int = 15 * 60
    # Failed sign-ins slow down, then lock, one (account, client address) pair: each failure
    # doubles the wait before the next try from that pair, from the first delay.
    console_login_max_failures: int = 5  # per (account, client address), within the window
    console_login_max_client_failures: int = 20  # per client address, any accounts
    console_login_window_s: int = 15 * 60
    console_login_first_delay_s: float = 1.0
    # Proxies whose X-Forwarded-For names the client (comma-separated addresses); empty: the
    # connection's own address is the client, whatever the header says.
    console_trusted_proxies: str = ""
    console_export_max_rows: int = 100_000
    console_digest_dir: Path = Path("reports/digest")

    def topics(self) -> dict[str, str]:
        """Every topic the services use, keyed by field name: what a broker must hold."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name.startswith("topic_")}

    def stripe_secrets(self) -> list[str]:
        """The webhook endpoint secrets, in the order given; empty when none is set."""
        return [s.strip() for s in (self.stripe_webhook_secrets or "").split(",") if s.strip()]

    def local_database_url(self) -> str:
        """The dev stack's database: role and database `fraudops`, trust auth on loopback."""
        return f"postgresql://fraudops@127.0.0.1:{self.postgres_port}/fraudops"

    def local_redis_url(self) -> str:
        """The dev stack's Redis, on its own port (not a system Redis on 6379)."""
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def local_kafka_cluster_bootstrap(self) -> str:
        """The dev stack's 3-broker Kafka, every broker named."""
        return ",".join(f"127.0.0.1:{self.kafka_cluster_port + n}" for n in range(3))

    def local_redis_cluster_url(self) -> str:
        """The dev stack's Redis Cluster, named by its first node."""
        return f"redis+cluster://127.0.0.1:{self.redis_cluster_port}/0"

    def with_local_services(self) -> Settings:
        """These settings, with the dev stack's Postgres and Redis where none is configured."""
        return replace(
            self,
            database_url=self.database_url or self.local_database_url(),
            redis_url=self.redis_url or self.local_redis_url(),
        )

    def console_url(self) -> str:
        return f"http://{self.console_host}:{self.console_port}"

    def kafka_config(self, **overrides: Any) -> dict[str, Any]:
        """The configuration every Kafka client of the project starts from: where the
        broker is and who this process is to it; `overrides` add the client's own keys."""
        config: dict[str, Any] = {"bootstrap.servers": self.kafka_bootstrap_servers}
        if self.kafka_sasl_username:
            config.update({
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": self.kafka_sasl_mechanism,
                "sasl.username": self.kafka_sasl_username,
                "sasl.password": self.kafka_sasl_password or "",
            })  # fmt: skip
        config.update(overrides)
        return config

    def kafka_login(self) -> dict[str, Any]:
        """The fields that say which broker and as whom, to carry into other settings
        (`replace(base, **settings.kafka_login())`)."""
        names = ("kafka_bootstrap_servers", "kafka_sasl_username", "kafka_sasl_password",
                 "kafka_sasl_mechanism")  # fmt: skip
        return {name: getattr(self, name) for name in names}

    def kafka_address(self) -> tuple[str, int]:
        """Host and port of the first bootstrap server."""
        host, _, port = self.kafka_bootstrap_servers.split(",")[0].rpartition(":")
        return host, int(port)


# Environment variable for each setting; the standard names where one exists.
ENV_NAMES = {
    "kafka_bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "kafka_sasl_username": "KAFKA_SASL_USERNAME",
    "kafka_sasl_password": "KAFKA_SASL_PASSWORD",
    "kafka_sasl_mechanism": "KAFKA_SASL_MECHANISM",
    "database_url": "DATABASE_URL",
    "redis_url": "REDIS_URL",
    "mlflow_tracking_uri": "MLFLOW_TRACKING_URI",
    "airflow_url": "AIRFLOW_URL",
}


def comma_list(text: str) -> list[str]:
    """The items of a comma-separated setting, stripped, empty ones dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


def env_name(field_name: str) -> str:
    return ENV_NAMES.get(field_name, f"FRAUDOPS_{field_name.upper()}")


def url_address(url: str) -> tuple[str, int]:
    """Host and port of a URL, with the scheme's default port when it names none."""
    parts = urlsplit(url)
    default = {"http": 80, "https": 443, "postgresql": 5432, "redis": 6379}.get(parts.scheme, 0)
    return parts.hostname or "127.0.0.1", parts.port or default


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Settings from the environment; a malformed value is an error naming the variable."""
    environ = dict(os.environ if environ is None else environ)
    values = {}
    for f in fields(Settings):
        raw = environ.get(env_name(f.name))
        if raw is None or raw == "":
            continue
        kind = str(f.type)
        try:
            if "int" in kind:
                values[f.name] = int(raw)
            elif "float" in kind:
                values[f.name] = float(raw)
            elif "Path" in kind:
                values[f.name] = Path(raw)
            else:
                values[f.name] = raw
        except ValueError as err:
            raise ValueError(f"{env_name(f.name)}={raw!r} is not a valid {kind}") from err
    return Settings(**values)


def to_environ(settings: Settings) -> dict[str, str]:
    """The environment that `load_settings` turns back into `settings`: every field, so a
    subprocess given it (over its parent's environment) inherits no stray value. An unset
    optional field is the empty string, which `load_settings` reads as unset."""
    environ = {}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        environ[env_name(f.name)] = "" if value is None else str(value)
    return environ
