"""Kafka-fed throughput of one scorer process: fill a fresh topic, then time the scorer
draining it, counting the scores that landed in Kafka and in Postgres."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from bench.common import STOP_S, median, transactions
from fraudops.db import connect
from fraudops.settings import Settings
from tests.helpers.stack import create_topics, delete_topics, python_process


@dataclass
class DrainResult:
    n: int
    seconds: float  # first score stored .. last score stored
    in_postgres: int
    on_kafka: int

    @property
    def rate(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else float("nan")


def fill(settings: Settings, n: int, seed: int) -> None:
    """Produce n serialized transactions, keyed by user, before any scorer runs."""
    producer = Producer({
        "bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 20,
        "batch.num.messages": 10000, "compression.type": "lz4",
        "queue.buffering.max.messages": 1_000_000,
    })  # fmt: skip
    for tx in transactions(n, users=20_000, seed=seed, prefix=f"stream{seed}"):
        producer.produce(settings.topic_raw, key=str(tx.user_id), value=tx.SerializeToString())
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("could not fill the raw topic")


def kafka_count(settings: Settings, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "group.id": f"bench-{uuid.uuid4().hex}"})  # fmt: skip
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.partitions
        )
    finally:
        consumer.close()


def _stored(url: str, prefix: str) -> int:
    conn = connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM scored_transactions WHERE transaction_id LIKE %s",
                (f"{prefix}-%",),
            )
            return cur.fetchone()[0]
    finally:
        conn.close()


def drain(base: Settings, n: int, seed: int, logs: Path, profile: Path | None) -> DrainResult:
    """One round on fresh topics and a fresh consumer group."""
    topics = create_topics(base.kafka_bootstrap_servers, "bench")
    settings = replace(base, consumer_group=f"bench-{uuid.uuid4().hex[:8]}", **topics)
    try:
        fill(settings, n, seed)
        args = ["-m", "serving.scorer"]
        if profile is not None:
            args = ["-m", "cProfile", "-o", str(profile), *args]
        prefix, first, count = f"stream{seed}", None, 0
        with python_process(args, settings, logs / f"scorer-{seed}.log", STOP_S):
            deadline = time.monotonic() + 600
            while count < n and time.monotonic() < deadline:
                time.sleep(0.05)
                count = _stored(settings.database_url, prefix)
                if count and first is None:
                    first = (time.perf_counter(), count)
            last = time.perf_counter()
        on_kafka = kafka_count(settings, settings.topic_scores)
    finally:
        delete_topics(settings.kafka_bootstrap_servers, list(topics.values()))
    return DrainResult(n - first[1], last - first[0], count, on_kafka)


def report(rounds: list[DrainResult], n: int) -> list[str]:
    rates = [r.rate for r in rounds]
    lines = [
        f"Kafka-fed scoring, one scorer process, {len(rounds)} rounds of {n} transactions:",
        f"  median {median(rates):8.0f} tx/s  (rounds: {', '.join(f'{r:.0f}' for r in rates)})",
    ]
    for i, r in enumerate(rounds, 1):
        lines.append(f"  round {i}: {r.in_postgres} rows in Postgres, {r.on_kafka} scores on Kafka")
    lines.append(f"  vs target 50,000 tx/s: {median(rates) / 50_000:.2f}x")
    return lines
