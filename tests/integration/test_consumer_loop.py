"""The consumer loop shared by the label and Stripe consumers, on real Kafka, with a handler
that fails in each way a real one can: a message it rejects, one that raises what no check
foresaw, one that meets an outage. The poison goes to the DLQ with its reason and the loop
goes on; the outage is retried and nothing is lost, even when the loop stops during it."""

from __future__ import annotations

import threading
import uuid

import psycopg2
import pytest
from confluent_kafka import Message, Producer

from fraudops.settings import Settings
from serving.consumer_loop import ConsumerLoop, Rejected
from tests.helpers.serving_env import committed, consume, make_settings, wait_until

pytestmark = pytest.mark.slow


class Handler:
    """Takes every message but those named in `poison` and the first `outages` attempts
    at each message named in `flaky`."""

    def __init__(self, flaky: tuple[bytes, ...] = (), outages: int = 2):
        self.handled: list[bytes] = []
        self.resets = 0
        self._outages = dict.fromkeys(flaky, outages)

    def handle(self, msg: Message) -> str:
        value = msg.value()
        if value == b"rejected":
            raise Rejected("amount: must be an integer below 2^63 in magnitude")
        if value == b"overflow":
            raise OverflowError("int too large to convert to float")
        if self._outages.get(value, 0) > 0:
            self._outages[value] -= 1
            raise psycopg2.OperationalError("server closed the connection unexpectedly")
        self.handled.append(value)
        return "handled"

    def reset(self) -> None:
        self.resets += 1

    def close(self) -> None:
        pass


@pytest.fixture
def topics(kafka_topics):
    return kafka_topics(n_partitions=1)  # one partition: the messages stay in order


def produce(kafka: Settings, topic: str, values: list[bytes]) -> None:
    producer = Producer(kafka.kafka_config())
    for i, value in enumerate(values):
        producer.produce(topic, key=f"key-{i}".encode(), value=value)
    assert producer.flush(30) == 0


def start(settings, group: str, handler: Handler) -> tuple[ConsumerLoop, threading.Thread]:
    loop = ConsumerLoop(settings, group, settings.topic_labels, settings.topic_labels_dlq)
    thread = threading.Thread(target=loop.run, args=(handler,), daemon=True)
    thread.start()
    return loop, thread


def test_poison_is_dead_lettered_with_its_reason_and_an_outage_is_retried(kafka_settings, topics):
    settings = make_settings(**kafka_settings.kafka_login(), **topics)
    values = [b"a", b"rejected", b"b", b"overflow", b"flaky", b"c"]
    produce(settings, settings.topic_labels, values)
    handler, group = Handler(flaky=(b"flaky",)), f"loop-{uuid.uuid4().hex[:8]}"
    loop, thread = start(settings, group, handler)
    try:
        wait_until(lambda: committed(settings, group, settings.topic_labels, 1) == 6,
                   "every offset committed", 60)  # fmt: skip
    finally:
        loop.stop()
        thread.join(30)
    assert not thread.is_alive()
    assert handler.handled == [b"a", b"b", b"flaky", b"c"]
    assert handler.resets == 2  # one per failed attempt at the flaky message
    assert loop.counts.outcomes == {"handled": 4}
    dead = consume(settings, settings.topic_labels_dlq, 2)
    got = [(m.value(), m.key(), dict(m.headers())["error"].decode()) for m in dead]
    assert got == [
        (b"rejected", b"key-1", "amount: must be an integer below 2^63 in magnitude"),
        (b"overflow", b"key-3", "OverflowError: int too large to convert to float"),
    ]


def test_a_loop_stopped_during_an_outage_leaves_the_message_for_the_next(kafka_settings, topics):
    settings = make_settings(**kafka_settings.kafka_login(), **topics)
    produce(settings, settings.topic_labels, [b"a", b"down", b"b"])
    group = f"loop-{uuid.uuid4().hex[:8]}"
    first = Handler(flaky=(b"down",), outages=10**6)
    loop, thread = start(settings, group, first)
    wait_until(lambda: first.resets > 0, "the outage to be met", 60)
    loop.stop()
    thread.join(30)
    assert first.handled == [b"a"]
    assert committed(settings, group, settings.topic_labels, 1) == 1  # "a" only
    second = Handler()
    loop, thread = start(settings, group, second)
    try:
        wait_until(lambda: second.handled == [b"down", b"b"], "the rest, redelivered", 60)
    finally:
        loop.stop()
        thread.join(30)
    assert consume(settings, settings.topic_labels_dlq, 1, timeout=3) == []
