"""Kafka-fed throughput of one or more scorer processes in one consumer group: start them on
a fresh, empty topic, wait until each holds partitions, then produce the transactions and
time the scores landing in Postgres (counted there and on Kafka). With Redis state, also
Redis's own counters per transaction: script calls (round trips), bytes each way and time
inside Redis."""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from bench.common import STOP_S, median, transactions
from fraudops.db import connect
from fraudops.settings import Settings
from tests.helpers.stack import (
    create_topics,
    delete_topics,
    python_process,
    wait_for_members,
)

# More partitions than scorers, evenly: 2 scorers get 2 each.
PARTITIONS = 4


@dataclass
class DrainResult:
    n: int
    seconds: float  # first score stored .. last score stored
    in_postgres: int
    on_kafka: int
    redis: dict[str, float] | None = None  # per transaction: calls, sent, received, usec

    @property
    def rate(self) -> float:
        return self.n / self.seconds if self.n and self.seconds > 0 else float("nan")


def serialized(n: int, seed: int, prefix: str, located: bool = False) -> list[tuple[str, bytes]]:
    """(key, value) of n transactions, keyed by user, made before any timing starts."""
    txs = transactions(n, users=20_000, seed=seed, prefix=prefix, located=located)
    return [(str(tx.user_id), tx.SerializeToString()) for tx in txs]


def fill(settings: Settings, messages: list[tuple[str, bytes]]) -> None:
    producer = Producer(settings.kafka_config(**{
        "linger.ms": 20, "batch.num.messages": 10000, "compression.type": "lz4",
        "queue.buffering.max.messages": 1_000_000,
    }))  # fmt: skip
    for key, value in messages:
        producer.produce(settings.topic_raw, key=key, value=value)
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("could not fill the raw topic")


def redis_counters(url: str) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("stats")
        script = client.info("commandstats").get("cmdstat_evalsha", {})
    finally:
        client.close()
    return {"calls": script.get("calls", 0), "sent": stats["total_net_input_bytes"],
            "received": stats["total_net_output_bytes"], "usec": script.get("usec", 0)}  # fmt: skip


def kafka_count(settings: Settings, topic: str) -> int:
    consumer = Consumer(settings.kafka_config(**{"group.id": f"bench-{uuid.uuid4().hex}"}))
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


def drain(
    base: Settings,
    n: int,
    seed: int,
    logs: Path,
    profile: Path | None = None,
    scorers: int = 1,
    located: bool = False,
) -> DrainResult:
    """One round on fresh topics and a fresh consumer group."""
    topics = create_topics(base, "bench", PARTITIONS)
    settings = replace(base, consumer_group=f"bench-{uuid.uuid4().hex[:8]}", **topics)
    prefix = f"stream{seed}-{uuid.uuid4().hex[:6]}"  # rows of earlier rounds do not count
    messages = serialized(n, seed, prefix, located)
    args = ["-m", "serving.scorer"]
    if profile is not None:
        args = ["-m", "cProfile", "-o", str(profile), *args]
    first, count = None, 0
    before = redis_counters(settings.redis_url) if settings.redis_url else None
    try:
        with contextlib.ExitStack() as running:
            for k in range(scorers):
                log = logs / f"scorer-{seed}-{k}.log"
                running.enter_context(python_process(args, settings, log, STOP_S))
            wait_for_members(settings, settings.consumer_group, scorers)
            fill(settings, messages)
            deadline = time.monotonic() + 600
            while count < n and time.monotonic() < deadline:
                time.sleep(0.05)
                count = _stored(settings.database_url, prefix)
                if count and first is None:
                    first = (time.perf_counter(), count)
            last = time.perf_counter()
        on_kafka = kafka_count(settings, settings.topic_scores)
    finally:
        delete_topics(settings, list(topics.values()))
    per_tx = None
    if before is not None:
        after = redis_counters(settings.redis_url)
        per_tx = {k: (after[k] - before[k]) / n for k in before}
    return DrainResult(n - first[1], last - first[0], count, on_kafka, per_tx)


def report(configs: dict[str, list[DrainResult]], n: int) -> list[str]:
    """`configs`: label -> rounds, the first label the reference the others compare to."""
    lines = [f"Kafka-fed scoring, rounds of {n} transactions ({PARTITIONS} partitions), "
             "median of rounds (first stored .. last stored):"]  # fmt: skip
    reference = None
    for label, rounds in configs.items():
        rate = median([r.rate for r in rounds])
        reference = reference if reference is not None else rate
        lines.append(f"  {label:<28} {rate:8.0f} tx/s  ({rate / reference:.2f}x; rounds: "
                     f"{', '.join(f'{r.rate:.0f}' for r in rounds)})")  # fmt: skip
        complete = all(r.in_postgres == n and r.on_kafka >= n for r in rounds)
        counts = ", ".join(f"{r.in_postgres}/{r.on_kafka}" for r in rounds)
        lines.append(f"    rows in Postgres / scores on Kafka per round: {counts}"
                     f"{'' if complete else '  INCOMPLETE'}")  # fmt: skip
        if rounds[-1].redis is not None:
            r = rounds[-1].redis
            lines.append(
                f"    Redis per tx: {r['calls']:.4f} round trips, {r['sent']:.0f} B sent, "
                f"{r['received']:.0f} B received, {r['usec']:.1f} µs inside Redis"
            )
    first = next(iter(configs))
    lines.append(f"  {first} vs the 50,000 tx/s per process target: {reference / 50_000:.2f}x")
    return lines
