"""The live screen's data: scores from Kafka `transaction_scores` as server-sent events,
and the scorer group's consumer lag.

Each open stream has a consumer of its own (assigned, not in a group; starting at the
end, never committing), so a browser tab never moves the scorer's offsets or another tab's.
Scores go out as soon as they are read: a read returns once a message arrives and takes
what comes with it within a few milliseconds, and each `tick` event carries the counts by
band of everything read since the last one and some of the scores themselves, flagged ones
first. The scores sent are limited to `MAX_ITEMS_PER_SECOND` (a token bucket holding at
most `MAX_ITEMS_PER_TICK`), so a busy topic cannot flood a browser while the chart still
counts every transaction; the newest flagged scores go first, those that find no room
wait for the next ticks (up to a second's worth, `MAX_WAITING`; beyond that the oldest give
way), ALLOW ones are only counted. With nothing to show, a tick still
goes every `TICK_S`."""

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
MAX_ITEMS_PER_SECOND = 100
# Flagged scores kept for the next ticks: what the budget sends in a second, so a burst
# of flagged scores reaches the screen whole and at most about a second late.
MAX_WAITING = MAX_ITEMS_PER_SECOND
TICK_S = 0.25  # the longest between two ticks (counts alone when nothing arrived)
POLL_S = 0.05  # the longest one read waits for a first message
COALESCE_S = 0.005  # after the first message, how long a read gathers the ones behind it
MAX_READ = 1000


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
    consumer = Consumer(settings.kafka_config(**{
        "group.id": f"fraudops-console-live-{uuid.uuid4().hex}",
        "enable.auto.commit": False, "enable.partition.eof": False,
    }))  # fmt: skip
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


def read_scores(consumer: Consumer) -> list[dict[str, Any]]:
    """The scores that arrive within POLL_S, plus those right behind the first one; a
    message that is not a ScoreResponse is skipped. (`consume` alone would wait out its
    whole timeout for a full batch.)"""
    first = consumer.poll(POLL_S)
    if first is None:
        return []
    msgs = [first, *consumer.consume(MAX_READ, COALESCE_S)]
    return [e for m in msgs if m.error() is None and (e := score_event(m.value())) is not None]


def pick(items: list[dict[str, Any]], room: int) -> tuple[list[dict[str, Any]], list]:
    """Of the scores read (oldest first), the `room` to send now: flagged before ALLOW,
    newest first, sent in the order they came; and the flagged ones left over, newest
    MAX_WAITING of them, for the next ticks (the ALLOW ones are only counted). More flagged
    scores than the budget passes in a second leave the oldest behind, so what is on the
    screen stays fresh."""
    flagged = [e for e in items if e["band"] != "ALLOW"]
    allow = [e for e in items if e["band"] == "ALLOW"]
    chosen = {id(e) for e in (flagged[::-1] + allow[::-1])[:room]}
    sent = [e for e in items if id(e) in chosen]
    return sent, [e for e in flagged if id(e) not in chosen][-MAX_WAITING:]


async def score_stream(settings: Settings, disconnected: Callable[[], Any]) -> AsyncIterator[str]:
    """SSE text: a `ready` event once the consumer is placed at the topic's end, then a
    `tick` ({counts by band, items}) as scores arrive, at least every TICK_S, until the
    client goes away."""
    consumer = await asyncio.to_thread(stream_consumer, settings)
    try:
        yield sse("ready", {"topic": settings.topic_scores})
        counts: Counter[str] = Counter()
        items: list[dict[str, Any]] = []
        allowance, refilled = float(MAX_ITEMS_PER_TICK), time.monotonic()
        last_tick = refilled
        while not await disconnected():
            for event in await asyncio.to_thread(read_scores, consumer):
                counts[event["band"]] += 1
                items.append(event)
            now = time.monotonic()
            allowance += (now - refilled) * MAX_ITEMS_PER_SECOND
            allowance, refilled = min(allowance, MAX_ITEMS_PER_TICK), now
            shown = min(len(items), int(allowance))
            if shown or now - last_tick >= TICK_S:
                sent, items = pick(items, shown)
                yield sse("tick", {"counts": dict(counts), "items": sent})
                allowance -= shown
                counts, last_tick = Counter(), now
    finally:
        await asyncio.to_thread(consumer.close)


def consumer_lag(settings: Settings, timeout_s: float = 5) -> int | None:
    """Messages of `topic_raw` the scorer group has not committed yet; None when Kafka
    cannot tell (the broker is away, or the group never committed)."""
    consumer = Consumer(settings.kafka_config(**{
        "group.id": settings.consumer_group, "enable.auto.commit": False,
    }))  # fmt: skip
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
