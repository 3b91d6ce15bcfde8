"""Kafka-fed throughput of one or more scorer processes in one consumer group: start them on
a fresh, empty topic, wait until each holds partitions, then produce the transactions and
time the scores landing in Postgres (counted there and on Kafka). With Redis state, also
Redis's own counters per transaction, summed over a cluster's nodes: script calls, bytes
each way and time inside Redis; and the CPU each process spent per transaction (scorers from
/proc, Redis nodes from INFO cpu), from which a core's capacity follows."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import redis
from confluent_kafka import Consumer, TopicPartition

from bench.capacity import cpu_seconds
from bench.common import STOP_S, median, transactions
from fraudops.db import connect
from fraudops.settings import Settings
from serving.feature_state.redis_store import CLUSTER_SCHEME
from serving.kafka_io import make_producer
from testkit.stack import (
    create_topics,
    delete_topics,
    python_process,
    wait_for_members,
)

# More partitions than scorers, evenly: 2 scorers get 2 each.
PARTITIONS = 4
REPEATS = 15  # payments per user in a round of the realistic address mix


@dataclass
class DrainResult:
    n: int
    seconds: float  # first score stored .. last score stored
    in_postgres: int
    on_kafka: int
    redis: dict[str, float] | None = None  # per transaction: calls, sent, received, usec, cpu
    scorer_cpu_us: float = float("nan")  # CPU of all scorer processes per transaction

    @property
    def rate(self) -> float:
        return self.n / self.seconds if self.n and self.seconds > 0 else float("nan")


def round_transactions(n: int, seed: int, prefix: str, located: str = "") -> list:
    """A round's transactions. Over 20,000 users most are new to a fresh scorer (its state
    and caches at their dearest); the realistic address mix has each user pay about
    REPEATS times a round instead, so users come back from addresses already seen, as they
    do to a scorer that has been running."""
    users = max(1, n // REPEATS) if located == "realistic" else 20_000
    return transactions(n, users=users, seed=seed, prefix=prefix, located=located)


def serialized(n: int, seed: int, prefix: str, located: str = "") -> list[tuple[str, bytes]]:
    """(key, value) of n transactions, keyed by user, made before any timing starts."""
    txs = round_transactions(n, seed, prefix, located)
    return [(str(tx.user_id), tx.SerializeToString()) for tx in txs]


def fill(settings: Settings, messages: list[tuple[str, bytes]], held: bool = False):
    """Produce the messages to the raw topic. `held`: inside one Kafka transaction, left open:
    a read_committed consumer (the scorer's: librdkafka's default) sees none of them until
    the returned function commits it, and then all of them at once."""
    extra = {"transactional.id": f"bench-{uuid.uuid4().hex}"} if held else {}
    producer = make_producer(settings, **{"linger.ms": 20}, **extra)  # placed as the server does
    if held:
        producer.init_transactions(30)
        producer.begin_transaction()
    for key, value in messages:
        producer.produce(settings.topic_raw, key=key, value=value)
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("could not fill the raw topic")
    return (lambda: producer.commit_transaction(30)) if held else None


def redis_nodes(url: str) -> list[str]:
    """The URL of every Redis server behind `url` (a cluster's masters and replicas)."""
    if not url.startswith(CLUSTER_SCHEME):
        return [url]
    first = redis.Redis.from_url("redis://" + url.removeprefix(CLUSTER_SCHEME))
    try:
        nodes = first.execute_command("CLUSTER", "NODES").decode().splitlines()
    finally:
        first.close()
    return [f"redis://{line.split()[1].split('@')[0]}/0" for line in nodes]


def redis_counters(url: str) -> dict[str, float]:
    """Counters summed over the servers behind `url`; cpu in microseconds."""
    total = dict.fromkeys(("calls", "sent", "received", "usec", "cpu"), 0.0)
    for node in redis_nodes(url):
        client = redis.Redis.from_url(node)
        try:
            stats, cpu = client.info("stats"), client.info("cpu")
            script = client.info("commandstats").get("cmdstat_evalsha", {})
        finally:
            client.close()
        total["calls"] += script.get("calls", 0)
        total["usec"] += script.get("usec", 0)
        total["sent"] += stats["total_net_input_bytes"]
        total["received"] += stats["total_net_output_bytes"]
        total["cpu"] += 1e6 * (cpu["used_cpu_user"] + cpu["used_cpu_sys"])
    return total


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


@dataclass
class _Round:
    """One configuration's round under way: its settings (fresh topics and group), the
    prefix of its transaction ids, its scorer processes, its transactions and, when held,
    the function that releases them."""

    settings: Settings
    prefix: str
    procs: list
    messages: list[tuple[str, bytes]]
    release: Callable[[], None] | None
    on_kafka: int = 0  # scores on Kafka, counted once the scorers stopped
    stored_count: int = 0  # rows in Postgres when last counted

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs)

    def stored(self) -> int:
        return _stored(self.settings.database_url, self.prefix)


@contextlib.contextmanager
def _round(
    base: Settings, n: int, seed: int, logs: Path, profile: Path | None, scorers: int,
    partitions: int, located: str, held: bool,
) -> Iterator[_Round]:  # fmt: skip
    """Fresh topics and consumer group, the scorers started and holding partitions, the
    transactions made (and, when `held`, produced held); after the block, the scorers
    stopped, the scores on Kafka counted and the topics deleted."""
    topics = create_topics(base, "bench", partitions)
    settings = replace(base, consumer_group=f"bench-{uuid.uuid4().hex[:8]}",
                       raw_partitions=partitions, **topics)  # fmt: skip
    prefix = f"stream{seed}-{uuid.uuid4().hex[:6]}"  # rows of earlier rounds do not count
    messages = serialized(n, seed, prefix, located)
    args = ["-m", "serving.scorer"]
    if profile is not None:
        args = ["-m", "cProfile", "-o", str(profile), *args]
    try:
        with contextlib.ExitStack() as running:
            logs_of = [logs / f"scorer-{prefix}-{k}.log" for k in range(scorers)]
            procs = [running.enter_context(python_process(args, settings, log, STOP_S))
                     for log in logs_of]  # fmt: skip
            wait_for_members(settings, settings.consumer_group, scorers)
            release = fill(settings, messages, held=True) if held else None
            current = _Round(settings, prefix, procs, messages, release)
            yield current
        current.on_kafka = kafka_count(settings, settings.topic_scores)
    finally:
        delete_topics(settings, list(topics.values()))


def drain(
    base: Settings, n: int, seed: int, logs: Path, profile: Path | None = None, scorers: int = 1,
    partitions: int = PARTITIONS, located: str = "",
) -> DrainResult:  # fmt: skip
    """One round on fresh topics and a fresh consumer group: the scorers' CPU from before
    the transactions are produced to the last score stored, the rate from the first score
    stored to the last."""
    with _round(base, n, seed, logs, profile, scorers, partitions, located, False) as r:
        url = r.settings.redis_url
        before = redis_counters(url) if url else None
        cpu_before = r.cpu()
        fill(r.settings, r.messages)
        first, last, cpu = _until_stored({"": r}, n)[""]
    per_tx = None
    if before is not None:
        after = redis_counters(url)
        per_tx = {k: (after[k] - before[k]) / n for k in before}
    cpu_us = (cpu - cpu_before) * 1e6 / n
    return DrainResult(n - first[1], last - first[0], r.stored_count, r.on_kafka, per_tx, cpu_us)


def drain_beside(
    configs: dict[str, Settings], n: int, seed: int, logs: Path, located: str = "",
    profile: Path | None = None,
) -> dict[str, DrainResult]:  # fmt: skip
    """One round of each configuration at the same time, one scorer each on its own topics:
    the same transactions produced held for each and released together, so every
    configuration drains full batches under the same load of the machine (a shared machine
    moves a lone round's figures far more than what two configurations differ by). Each
    one's CPU per transaction and rate are counted over its own drain (release .. its last
    score stored; the last to finish had the machine to itself for its tail, which narrows
    the rates' gap a little, not the CPU's). `profile`: the last configuration under
    cProfile."""
    last_label = list(configs)[-1]
    with contextlib.ExitStack() as stack:
        rounds = {label: stack.enter_context(_round(
            s, n, seed, logs, profile if label == last_label else None, 1, PARTITIONS,
            located, True)) for label, s in configs.items()}  # fmt: skip
        cpu_before = {label: r.cpu() for label, r in rounds.items()}
        started = time.perf_counter()
        for r in rounds.values():
            r.release()
        done = _until_stored(rounds, n)
    results = {}
    for label, r in rounds.items():
        _, last, cpu = done[label]
        results[label] = DrainResult(n, last - started, r.stored_count, r.on_kafka,
                                     scorer_cpu_us=(cpu - cpu_before[label]) * 1e6 / n)  # fmt: skip
    return results


def _until_stored(
    rounds: dict[str, _Round], n: int, timeout: float = 600
) -> dict[str, tuple[tuple[float, int] | None, float, float]]:
    """Poll every round's stored rows until each has n (or the timeout): for each, when
    (perf_counter) and at what count rows were first seen, when it finished and its
    scorers' CPU then (NaN for a round that did not finish)."""
    first: dict[str, tuple[float, int]] = {}
    done: dict[str, tuple[float, float]] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(rounds) and time.monotonic() < deadline:
        time.sleep(0.05)
        for label, r in rounds.items():
            if label not in done:
                r.stored_count = r.stored()
                if r.stored_count and label not in first:
                    first[label] = (time.perf_counter(), r.stored_count)
                if r.stored_count >= n:
                    done[label] = (time.perf_counter(), r.cpu())
    missing = (float("nan"), float("nan"))
    return {label: (first.get(label), *done.get(label, missing)) for label in rounds}


def report(
    configs: dict[str, list[DrainResult]], n: int, partitions: int = PARTITIONS,
    span: str = "first stored .. last stored",
) -> list[str]:  # fmt: skip
    """`configs`: label -> rounds, the first label the reference the others compare to;
    `span`: what the rounds timed (see `drain`)."""
    lines = [f"Kafka-fed scoring, rounds of {n} transactions ({partitions} partitions), "
             f"median of rounds ({span}):"]  # fmt: skip
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
                f"    Redis per tx: {r['calls']:.4f} script calls, {r['sent']:.0f} B sent, "
                f"{r['received']:.0f} B received, {r['usec']:.1f} µs inside Redis"
            )
        lines += cpu_lines(rounds)
    first = next(iter(configs))
    lines.append(
        "  (N cores hold N x the tx/s per core above, while Kafka partitions >= "
        "scorers and Redis nodes are added at the per-core Redis figure)"
    )
    lines.append(f"  {first} vs the 50,000 tx/s per process target: {reference / 50_000:.2f}x")
    return lines


def cpu_lines(rounds: list[DrainResult]) -> list[str]:
    """CPU per transaction of the scorers (median of rounds: on a busy machine it moves far
    less than the rate does, which also counts the time the scorers waited for a core) and
    of Redis (the last round), and what a core of each holds."""
    scorer = [r.scorer_cpu_us for r in rounds]
    parts = {"scorer processes": median(scorer)}
    if rounds[-1].redis is not None:
        parts["Redis servers (all nodes)"] = rounds[-1].redis["cpu"]
    each = ", ".join(f"{us:.1f}" for us in scorer)
    lines = [f"    CPU per tx, scorer processes, rounds: {each} µs"]
    for name, us in parts.items():
        lines.append(f"    CPU per tx, {name}: {us:.1f} µs -> {1e6 / us:,.0f} tx/s per core")
    total = sum(parts.values())
    lines.append(f"    together {total:.1f} µs per tx: {1e6 / total:,.0f} tx/s per core; "
                 f"10,000 tx/s needs {total * 1e4 / 1e6:.2f} cores")  # fmt: skip
    return lines
