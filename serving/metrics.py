"""Prometheus metrics of the scoring service, in one registry served over HTTP on
127.0.0.1:`settings.metrics_port` (the scorer uses the next port by default, so both fit
on one host). Metric updates are plain counter increments: cheap on the hot path.

A server run as several worker processes (serving.server.supervise) uses prometheus_client's
multiprocess mode: the supervisor sets MULTIPROC_ENV before spawning the workers, whose
metrics then live in files there, and serves one endpoint summing them (gauges as noted
by their `multiprocess_mode`; outside that mode it is ignored)."""

from __future__ import annotations

import collections
import functools
import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Sub-millisecond buckets: the inline target is p50 < 1 ms, p99 < 5 ms.
_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5)

RPC_LATENCY = Histogram(
    "fraudops_rpc_latency_seconds",
    "Server-side handling time of each gRPC call.",
    ["rpc"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
RPC_ERRORS = Counter(
    "fraudops_rpc_errors_total",
    "gRPC calls answered with an error status.",
    ["rpc", "code"],
    registry=REGISTRY,
)
AUTH_REFUSED = Counter(
    "fraudops_auth_refused_total",
    "gRPC calls refused before their handler: UNAUTHENTICATED (no valid credentials) or "
    "PERMISSION_DENIED (a scope or label source the caller may not use).",
    ["rpc", "code"],
    registry=REGISTRY,
)
SCORES = Counter(
    "fraudops_scores_total",
    "Transactions scored, by risk band and path (inline or stream).",
    ["band", "source"],
    registry=REGISTRY,
)
MODEL_VERSION = Gauge(
    "fraudops_model_info",
    "1 for the model version this process serves.",
    ["version"],
    registry=REGISTRY,
    multiprocess_mode="liveall",  # one series per live worker: each says what it serves
)
RELOADS = Counter(
    "fraudops_model_reloads_total",
    "Model reload attempts by outcome (swapped, rejected).",
    ["outcome"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "fraudops_consumer_lag_messages",
    "Messages on raw_transactions not yet consumed by this scorer, per partition.",
    ["partition"],
    registry=REGISTRY,
)
BATCH_LATENCY = Histogram(
    "fraudops_scorer_batch_seconds",
    "Time to decode, score and hand off one micro-batch in the stream scorer.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
DURABLE_LATENCY = Histogram(
    "fraudops_scorer_durable_seconds",
    "Time for the stream scorer's writer to make one micro-batch durable: Postgres rows, "
    "then every Kafka acknowledgement (its offsets are committed after).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "fraudops_scorer_batch_size",
    "Messages per micro-batch in the stream scorer.",
    buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000),
    registry=REGISTRY,
)
INLINE_BATCH_SIZE = Histogram(
    "fraudops_inline_batch_size",
    "Concurrent inline Score calls scored together in one batch (serving.batching).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
    registry=REGISTRY,
)
INLINE_EXPIRED = Counter(
    "fraudops_inline_expired_total",
    "Inline Score calls answered DEADLINE_EXCEEDED unscored: their deadline passed as they waited.",
    registry=REGISTRY,
)
DLQ = Counter(
    "fraudops_dlq_total",
    "Messages sent to the dead-letter topic, by the field or decoding step that failed.",
    ["reason"],
    registry=REGISTRY,
)
PERSISTED = Counter(
    "fraudops_scores_persisted_total",
    "Score rows handed to Postgres (duplicates are dropped by the primary key).",
    ["source"],
    registry=REGISTRY,
)
SCORED_WITHOUT_HISTORY = Counter(
    "fraudops_scored_without_history_total",
    "Transactions scored inline as if their user were new: the feature store was unreachable.",
    registry=REGISTRY,
)
FEATURE_STORE_RETRIES = Counter(
    "fraudops_feature_store_retries_total",
    "Micro-batches the stream scorer held back and retried: the feature store was unreachable.",
    registry=REGISTRY,
)
DELIVERY_TIMEOUTS = Counter(
    "fraudops_scorer_delivery_timeouts_total",
    "Times the stream scorer consumed again from its last durable offsets: Kafka did not "
    "acknowledge a batch's scores within FRAUDOPS_SCORER_DELIVERY_TIMEOUT_S.",
    registry=REGISTRY,
)
MISSING_HISTORY = Gauge(
    "fraudops_feature_store_missing_history_rows",
    "Recent scored transactions in Postgres when this process found the feature state empty "
    "at start (0: nothing missing); fraudops-features rebuild restores them.",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
INLINE_DEAD_LETTERED = Counter(
    "fraudops_inline_scores_dead_lettered_total",
    "Inline scores sent to the inline dead-letter topic instead of Postgres, by reason "
    "(refused: the database rejected the row; unwritten: Postgres unreachable after the "
    "retries; queue_full: too many scores already waiting for Postgres).",
    ["reason"],
    registry=REGISTRY,
)
INLINE_LOST = Counter(
    "fraudops_inline_scores_lost_total",
    "Inline scores neither Postgres nor the inline dead-letter topic took.",
    registry=REGISTRY,
)

_current_version: list[str] = []


def set_model_version(version: str) -> None:
    """Exactly one version label reads 1."""
    for old in _current_version:
        MODEL_VERSION.labels(version=old).set(0)
    _current_version[:] = [version]
    MODEL_VERSION.labels(version=version).set(1)


def serve(port: int) -> None:
    """Expose the registry on 127.0.0.1:port; port 0 turns the endpoint off."""
    if port <= 0:
        return
    start_http_server(port, addr="127.0.0.1", registry=REGISTRY)
    log.info("metrics on http://127.0.0.1:%d/metrics", port)


def serve_aggregated(port: int, directory: str) -> None:
    """Expose, on 127.0.0.1:port, the metrics every worker process writes to `directory`;
    port 0 turns the endpoint off."""
    from prometheus_client import multiprocess

    if port <= 0:
        return
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    start_http_server(port, addr="127.0.0.1", registry=registry)
    log.info("metrics of every worker on http://127.0.0.1:%d/metrics", port)


RULE_MATCHES = Counter(
    "fraudops_rule_matches_total",
    "Transactions an analysts' rule matched, by rule and mode (live: it decided; shadow).",
    ["rule", "mode"],
    registry=REGISTRY,
)
RULE_ERRORS = Counter(
    "fraudops_rule_errors_total",
    "Rule evaluations that failed at run time (the rule matched nothing).",
    registry=REGISTRY,
)


def count_rules(decisions) -> None:
    """Count a batch's rule decisions (fraudops.rules.Decisions) by rule. A transaction
    scored alone is counted without a Counter and each rule's counter is looked up once:
    labels() and a Counter cost a matched Score ~6 µs, more than a hundred compiled rules."""
    if not decisions.matched and not decisions.errors:
        return
    live = [name for name in decisions.decided_by if name != "model"]
    shadow = [name for names in decisions.shadow if names for name in names]
    for mode, names in (("live", live), ("shadow", shadow)):
        counts = collections.Counter(names) if len(names) > 1 else dict.fromkeys(names, 1)
        for name, count in counts.items():
            _rule_matches(name, mode).inc(count)
    if decisions.errors:
        RULE_ERRORS.inc(decisions.errors)


@functools.lru_cache(maxsize=4096)
def _rule_matches(rule: str, mode: str):
    return RULE_MATCHES.labels(rule=rule, mode=mode)


RULE_RELOADS = Counter(
    "fraudops_rule_reloads_total",
    "Rule set reloads by outcome (swapped, rejected).",
    ["outcome"],
    registry=REGISTRY,
)
