"""The Kafka consumer loop of the services that handle a topic one message at a time (the
label consumer, the Stripe event consumer): poll a batch, handle each message, commit.

A message whose handler raises anything but a transient infrastructure error goes to the
loop's dead-letter topic, with its original bytes and key and the reason in the `error`
header, and the loop goes on: no message can stop the ones behind it. A transient error
(Postgres or Kafka unavailable) is retried on the same message, each wait twice the last
up to a cap, until it passes or the loop is stopped: an outage stalls the consumer, it
neither loses messages nor dead-letters them. Offsets are committed once every message
before them is handled or its dead-letter copy acknowledged by the broker, so a crash
redelivers and never loses; handlers make a redelivery a no-op.

The stream scorer decodes, scores and writes micro-batches column-wise, so it has a loop
of its own; it shares the dead-letter copy (`kafka_io.dead_letter`) and `Backoff`."""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from confluent_kafka import KafkaException, Message

from fraudops.db import connect
from fraudops.settings import Settings
from serving.kafka_io import (
    AckingProducer,
    consume_messages,
    dead_letter,
    make_consumer,
    make_producer,
    next_offsets,
)
from serving.persistence import RETRYABLE

log = logging.getLogger(__name__)

# Postgres or Kafka unavailable: retried on the same message, never blamed on it.
TRANSIENT = (*RETRYABLE, KafkaException, TimeoutError)
RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS = 0.5, 10.0
POLL_SECONDS = 1.0  # also the longest a stop waits before the loop notices it
T = TypeVar("T")


class Rejected(Exception):
    """Raised by a handler for a message it refuses for what it holds; the message is
    dead-lettered with this reason, which names the field (`field: problem`)."""


class Interrupted(Exception):
    """Stopped while retrying: the message in hand and those after it stay uncommitted,
    and Kafka redelivers them."""


class Handler(Protocol):
    """What a consumer does with one message; the loop polls, retries, dead-letters and
    commits around it."""

    def handle(self, msg: Message) -> str:
        """Do what the message says and return a word for what it became (counted).
        Raise Rejected (or anything else) for a message to dead-letter, a TRANSIENT error
        for one to retry."""
        ...

    def reset(self) -> None:
        """After a transient error: drop connections, so the retry opens fresh ones."""
        ...

    def close(self) -> None: ...


class DatabaseHandler:
    """The Postgres connection of a handler: opened on first use, closed on a transient
    error (`reset`, so the retry reconnects) and at the end."""

    def __init__(self, database_url: str):
        self._database_url = database_url
        self._conn = None

    def connection(self):
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._database_url)
        return self._conn

    def reset(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def close(self) -> None:
        self.reset()


@dataclass
class Counts:
    """What the loop has done since it started (logged on exit; read by tests)."""

    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    dead_lettered: collections.Counter[str] = field(default_factory=collections.Counter)


def reason_of(err: Exception) -> str:
    """The dead-letter reason: a rejection says `field: problem`; anything else (a value no
    check foresaw, a bug) gives its type, so the header still says what went wrong."""
    if isinstance(err, Rejected):
        return str(err)
    return f"{type(err).__name__}: {err}"


class Backoff:
    """Waits between attempts that double from `first` up to `cap`; a stop cuts one short."""

    def __init__(self, stop: threading.Event, first: float, cap: float):
        self._stop = stop
        self.delay = first
        self._cap = cap

    def wait(self) -> bool:
        """Wait the current delay (the next one doubles); True if stopped meanwhile."""
        stopped = self._stop.wait(self.delay)
        self.delay = min(2 * self.delay, self._cap)
        return stopped


class ConsumerLoop:
    """One member of a consumer group: the Kafka clients, the loop, and its counts."""

    def __init__(
        self, settings: Settings, group: str, topic: str, dlq_topic: str, batch_size: int = 200
    ):
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.batch_size = batch_size
        self.stop_event = threading.Event()
        self.counts = Counts()
        self.consumer = make_consumer(settings, group, report_lag=False)
        self.producer = AckingProducer(make_producer(settings))  # handlers may produce too

    def run(self, handler: Handler) -> Counts:
        """Consume until stop() (SIGTERM/SIGINT); the message in hand is finished first."""
        self.consumer.subscribe([self.topic])
        log.info("consuming %s (DLQ %s)", self.topic, self.dlq_topic)
        try:
            while not self.stop_event.is_set():
                self.poll_once(handler, POLL_SECONDS)
        except Interrupted as err:
            log.warning("%s; the rest of the batch will be redelivered", err)
        finally:
            self.consumer.close()
            self.producer.close()
            handler.close()
        log.info("stopped: %s", self.counts)
        return self.counts

    def stop(self, *_args) -> None:
        self.stop_event.set()

    def poll_once(self, handler: Handler, timeout: float) -> int:
        """Handle one batch and commit what was done; returns the batch's size."""
        batch = consume_messages(self.consumer, self.batch_size, timeout)
        done: list[Message] = []
        try:
            for msg in batch:
                self._handle(handler, msg)
                done.append(msg)
        finally:
            self._commit(done)
        return len(batch)

    def _handle(self, handler: Handler, msg: Message) -> None:
        try:
            outcome = self._retrying(handler, lambda: handler.handle(msg))
        except Interrupted:
            raise
        except Exception as err:  # noqa: BLE001 - whatever one message raises is its own
            self._dead_letter(handler, msg, reason_of(err))
            return
        self.counts.outcomes[outcome] += 1

    def _dead_letter(self, handler: Handler, msg: Message, reason: str) -> None:
        kind = reason.split(":", 1)[0]
        value, headers = dead_letter(msg, reason, kind)
        send = self.producer.send
        self._retrying(handler, lambda: send(self.dlq_topic, msg.key(), value, headers=headers))
        self.counts.dead_lettered[kind] += 1

    def _retrying(self, handler: Handler, attempt: Callable[[], T]) -> T:
        """`attempt()`, repeated while it fails transiently, until it passes or a stop."""
        pause = Backoff(self.stop_event, RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS)
        while True:
            try:
                return attempt()
            except TRANSIENT as err:
                what = "database" if isinstance(err, RETRYABLE) else "Kafka"
                log.warning("%s unavailable, retrying in %.1f s: %s", what, pause.delay, err)
                handler.reset()
                if pause.wait():
                    raise Interrupted(f"stopped while the {what} was unavailable") from err

    def _commit(self, done: list[Message]) -> None:
        """Commit the handled messages' offsets. A failed commit (a rebalance, the broker
        away) loses nothing: a later commit covers them, or they are redelivered."""
        if not done:
            return
        try:
            self.consumer.commit(offsets=next_offsets(done), asynchronous=False)
        except KafkaException as err:
            log.warning("offsets not committed (%s); the messages may be redelivered", err)
