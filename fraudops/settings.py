"""Runtime endpoints and knobs, read from the environment once when a process starts
(never at import). Pipeline parameters live in params.yaml instead (see fraudops.params)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    database_url: str | None = None  # None: no database (collect_feedback reads nothing)
    mlflow_tracking_uri: str = "http://127.0.0.1:5000"
    model_dir: Path = Path("models/serving")
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    metrics_port: int = 9108
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
    min_event_ts: int = 946_684_800  # 2000-01-01: an earlier transaction timestamp is refused
    max_event_ts_ahead_s: int = 300  # and so is one further ahead of the validating clock
    scorer_batch_size: int = 2000
    scorer_poll_seconds: float = 0.05
    log_level: str = "INFO"


# Environment variable for each setting; the standard names where one exists.
ENV_NAMES = {
    "kafka_bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "database_url": "DATABASE_URL",
    "mlflow_tracking_uri": "MLFLOW_TRACKING_URI",
}


def env_name(field_name: str) -> str:
    return ENV_NAMES.get(field_name, f"FRAUDOPS_{field_name.upper()}")


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
