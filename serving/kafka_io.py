"""Kafka clients of the scoring service, configured in one place.

Producers are idempotent with acks=all, so a retried send never duplicates or reorders a
message within a partition. Consumers never auto-commit: the scorer and the consumer loop
commit a batch's offsets (`next_offsets`) by hand once everything it produced is durable."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from fraudops.pii import mask_pii
from fraudops.settings import Settings
from serving import metrics

log = logging.getLogger(__name__)

# The most of a message's value a dead-letter copy keeps: under the producer's message size
# limit (librdkafka's message.max.bytes, 1,000,000) with room for the key and the headers,
# while the broker takes messages up to 1 MiB.
MAX_DEAD_LETTER_BYTES = 900_000


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    config = settings.kafka_config(**{
        "enable.idempotence": True,
        "acks": "all",
        # Kafka's default partitioner (Java's): the feature state derives a user's Redis
        # slot from the same partition (serving.feature_state.redis_store.partition_of).
        "partitioner": "murmur2_random",
        "linger.ms": 2,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 512 * 1024,
        "batch.num.messages": 10_000,
        "error_cb": _log_error,
    })  # fmt: skip
    config.update(overrides)
    return config


def make_producer(settings: Settings, **overrides: Any) -> Producer:
    return Producer(producer_config(settings, **overrides))


def make_consumer(
    settings: Settings, group: str | None = None, report_lag: bool = True, **overrides: Any
) -> Consumer:
    """A manual-commit consumer (default: the scorer's group); a new group starts at the
    earliest offset, so nothing already on the topic is skipped. With `report_lag`, the
    partitions' lag goes to the scorer's consumer-lag gauge via librdkafka statistics."""
    config = settings.kafka_config(**{
        "group.id": group or settings.consumer_group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        # A member that died holds its partitions until its session times out: 10 s, not
        # librdkafka's 45 s. Heartbeats come from librdkafka's own thread, so a long batch
        # never misses one.
        "session.timeout.ms": 10_000,
        "fetch.min.bytes": 1,
        "fetch.wait.max.ms": 50,
        "queued.max.messages.kbytes": 256 * 1024,
        "error_cb": _log_error,
    })  # fmt: skip
    if report_lag:
        config.update({"statistics.interval.ms": 5000, "stats_cb": record_lag})
    config.update(overrides)
    return Consumer(config)


Headers = list[tuple[str, bytes]]


def dead_letter(msg: Message, reason: str, kind: str) -> tuple[bytes | None, Headers]:
    """Value and headers of the dead-letter copy of `msg`: its original bytes, and the
    reason in `error`, PII masked (a reason may quote a field's value; headers get read and
    logged). Logged, and counted by `kind` (the field or step that failed). A value too
    large to be sent again keeps its head and `truncated_from` says how long it was:
    refused on its way to the DLQ, it would stop its consumer on every restart."""
    reason = mask_pii(reason)
    metrics.DLQ.labels(reason=kind).inc()
    log.warning("message at %s[%d]@%d to the DLQ: %s",
                msg.topic(), msg.partition(), msg.offset(), reason)  # fmt: skip
    value = msg.value()
    headers = [("error", reason.encode())]
    if value is not None and len(value) > MAX_DEAD_LETTER_BYTES:
        headers.append(("truncated_from", str(len(value)).encode()))
        value = value[:MAX_DEAD_LETTER_BYTES]
    return value, headers


def next_offsets(msgs: list[Message]) -> list[TopicPartition]:
    """The offsets to commit once every message of `msgs` is handled (a partition's
    messages arrive in offset order, so its last one is its highest)."""
    last: dict[tuple[str, int], int] = {}
    for m in msgs:
        last[m.topic(), m.partition()] = m.offset()
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


def consume_messages(consumer: Consumer, n: int, timeout: float) -> list[Message]:
    """Up to `n` messages; error events are left out (end of partition silently, others
    logged), so every message returned has a value to handle and an offset to commit."""
    good = []
    for msg in consumer.consume(n, timeout):
        err = msg.error()
        if err is None:
            good.append(msg)
        elif err.code() != KafkaError._PARTITION_EOF:
            log.error("consumer error: %s", err)
    return good


def _log_error(err: KafkaError) -> None:
    if err.fatal():
        log.error("fatal Kafka error: %s", err)
    else:
        log.warning("Kafka: %s", err)


def record_lag(stats_json: str) -> None:
    """librdkafka statistics -> the consumer-lag gauge, per assigned partition."""
    stats = json.loads(stats_json)
    for topic in stats.get("topics", {}).values():
        for pid, part in topic.get("partitions", {}).items():
            lag = part.get("consumer_lag", -1)
            if pid != "-1" and lag >= 0:
                metrics.CONSUMER_LAG.labels(partition=pid).set(lag)


class AckingProducer:
    """Produces and waits for each message's delivery report before acknowledging.

    A background thread serves delivery callbacks, so many request threads can wait on
    their own messages at once while librdkafka batches them together."""

    def __init__(self, producer: Producer):
        self._producer = producer
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="kafka-delivery", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(0.1)

    def send(
        self, topic: str, key: str | bytes | None, value: bytes | None, timeout: float = 10.0,
        headers: Headers | None = None,
    ) -> tuple[int, int]:  # fmt: skip
        """Produce and block until the broker has it; returns (partition, offset)."""
        done = threading.Event()
        outcome: list[Any] = []

        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            outcome.append(err if err is not None else (msg.partition(), msg.offset()))
            done.set()

        self._produce(topic, key, value, headers, on_delivery)
        if not done.wait(timeout):
            raise TimeoutError(f"no delivery report from Kafka within {timeout:g}s")
        if isinstance(outcome[0], KafkaError):
            raise KafkaException(outcome[0])
        return outcome[0]

    def _produce(self, topic: str, key, value, headers, on_delivery) -> None:
        message = {"value": value, "key": key, "headers": headers, "on_delivery": on_delivery}
        try:
            self._producer.produce(topic, **message)
        except BufferError:  # local queue full: let deliveries drain once, then retry
            self._producer.poll(0.5)
            self._producer.produce(topic, **message)

    def close(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._thread.join(timeout=timeout)
        remaining = self._producer.flush(timeout)
        if remaining:
            log.error("%d messages still undelivered at shutdown", remaining)
