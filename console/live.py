"""The live screen's data: scores from Kafka `transaction_scores` as server-sent events,
and the scorer group's consumer lag.

Each open stream has a consumer of its own (assigned, not in a group; starting at the
end, never committing), so a browser tab never moves the scorer's offsets or another tab's. Four
times a second the stream sends the counts by band of everything read since the last tick
and at most `MAX_ITEMS_PER_TICK` of the scores themselves, flagged ones first, so a busy
topic cannot flood a browser while the chart still counts every transaction."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from fraudops.proto_gen.fraud.v1 import fraud_pb2
from fraudops.settings import Settings

MAX_ITEMS_PER_TICK = 25
TICK_S = 0.25
POLL_S = 0.05


def score_event(value: bytes) -> dict[str, Any] | None:
    """A ScoreResponse as the browser sees it; None for bytes that are not one."""
    msg = fraud_pb2.ScoreResponse()
    try:
        msg.ParseFromString(value)
    except Exception:  # a DecodeError, or anything protobuf raises on garbage
        return None
    return {
        "transaction_id": msg.transaction_id,
        "score": msg.score,
        "band": fraud_pb2.Band.Name(msg.band),
        "model_version": msg.model_version,
        "reasons": list(msg.reasons),
        "latency_us": msg.latency_us,
        "scored_at_ms": msg.scored_at,
    }


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def stream_consumer(settings: Settings, timeout_s: float = 10) -> Consumer:
    """A consumer assigned every partition of the scores topic at its current end, so
    whatever is scored from now on is read (explicit offsets: nothing resolved lazily)."""
    consumer = Consumer({
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": f"fraudops-console-live-{uuid.uuid4().hex}",
        "enable.auto.commit": False, "enable.partition.eof": False,
    })  # fmt: skip
    topic = settings.topic_scores
    metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
    if metadata.error is not None:
        consumer.close()
        raise KafkaException(metadata.error)
    ends = []
    for p in metadata.partitions:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
        ends.append(TopicPartition(topic, p, high))
    consumer.assign(ends)
    return consumer


async def score_stream(settings: Settings, disconnected: Callable[[], Any]) -> AsyncIterator[str]:
    """SSE text: a `ready` event once the consumer is placed at the topic's end, then a
    `tick` every TICK_S ({counts by band, items}) until the client goes away."""
    consumer = await asyncio.to_thread(stream_consumer, settings)
    try:
        yield sse("ready", {"topic": settings.topic_scores})
        counts: Counter[str] = Counter()
        items: list[dict[str, Any]] = []
        tick_at = time.monotonic() + TICK_S
        while not await disconnected():
            for msg in await asyncio.to_thread(consumer.consume, 1000, POLL_S):
                if msg.error() is None and (event := score_event(msg.value())) is not None:
                    counts[event["band"]] += 1
                    items.append(event)
            if time.monotonic() >= tick_at:
                items.sort(key=lambda e: e["band"] == "ALLOW")
                yield sse("tick", {"counts": dict(counts), "items": items[:MAX_ITEMS_PER_TICK]})
                counts, items = Counter(), []
                tick_at = time.monotonic() + TICK_S
    finally:
        await asyncio.to_thread(consumer.close)


def consumer_lag(settings: Settings, timeout_s: float = 5) -> int | None:
    """Messages of `topic_raw` the scorer group has not committed yet; None when Kafka
    cannot tell (the broker is away, or the group never committed)."""
    consumer = Consumer({
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": settings.consumer_group, "enable.auto.commit": False,
    })  # fmt: skip
    try:
        topic = consumer.list_topics(settings.topic_raw, timeout=timeout_s).topics.get(
            settings.topic_raw
        )
        if topic is None or topic.error is not None:
            return None
        partitions = [TopicPartition(settings.topic_raw, p) for p in topic.partitions]
        committed = consumer.committed(partitions, timeout=timeout_s)
        lag = 0
        for tp in committed:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
            lag += high - (tp.offset if tp.offset >= 0 else low)
        return lag
    except KafkaException:
        return None
    finally:
        consumer.close()
