"""Kafka consumer for the `transaction_labels` topic (chargeback feeds and bulk imports).

Each message is a LabelRequest; it is stored with `serving.labels.record_label`, the same
function the gRPC Feedback servicer uses. A message that cannot be decoded, or holds an
invalid label (unknown transaction included), or one the database refuses for what it
holds, goes to `transaction_labels.dlq` with its original bytes and the reason in the
`error` header; the labels around it are stored. Offsets are committed only after the
database commit or the DLQ delivery of every message before them, so a crash redelivers
and never loses a label (and `record_label` makes a redelivery a no-op).

Who may write this topic is the broker's business (its ACLs); what they may write is
checked here: a label's source must match one of `kafka_label_sources` (globs), and
`analyst:<name>` never comes through Kafka (the console, its only author, writes to
Postgres). A label from any other source goes to the DLQ with the reason.

    python -m serving.label_consumer [--group fraudops-labels]
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from dataclasses import dataclass, field

import psycopg2
from confluent_kafka import KafkaException, Message
from google.protobuf.message import DecodeError

from fraudops.db import connect
from fraudops.pii import configure_logging, mask_pii
from fraudops.proto_gen.fraud.v1 import fraud_pb2
from fraudops.settings import Settings, comma_list, load_settings
from serving.kafka_io import (
    consume_messages,
    dead_letter,
    make_consumer,
    make_producer,
    next_offsets,
)
from serving.labels import LabelError, label_name, record_label, source_refusal, validate_label
from serving.persistence import refusal

log = logging.getLogger("fraudops.label_consumer")

DEFAULT_GROUP = "fraudops-labels"
BATCH_SIZE = 200
POLL_SECONDS = 1.0  # also the longest a SIGTERM waits before the consumer stops
DB_RETRY_FIRST_SECONDS = 0.5
DB_RETRY_MAX_SECONDS = 10.0


class Interrupted(Exception):
    """Stopped in the middle of a batch: its offsets stay uncommitted and Kafka redelivers."""


@dataclass
class Counts:
    """What the consumer has done since it started (logged on exit; read by tests)."""

    stored: int = 0
    unchanged: int = 0
    dead_lettered: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def decode(value: bytes | None) -> fraud_pb2.LabelRequest:
    """Parse a LabelRequest; raise LabelError('message', ...) for bytes that are not one."""
    if not value:
        raise LabelError("message", "empty message")
    try:
        return fraud_pb2.LabelRequest.FromString(value)
    except DecodeError as err:
        raise LabelError("message", f"not a LabelRequest ({err})") from err


class LabelConsumer:
    """One member of the label consumer group: poll, store or dead-letter, then commit."""

    def __init__(self, settings: Settings, group: str = DEFAULT_GROUP):
        self.settings = settings
        self.stop_event = threading.Event()
        self.counts = Counts()
        self.consumer = make_consumer(settings, group, report_lag=False)
        self.producer = make_producer(settings)
        self.conn = None
        self._delivery_errors: list[str] = []
        self._sources = comma_list(settings.kafka_label_sources)

    def _connect(self):
        if self.conn is None or self.conn.closed:
            self.conn = connect(self.settings.database_url)
        return self.conn

    def _disconnect(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None

    def _on_delivery(self, err, _msg) -> None:
        if err is not None:
            self._delivery_errors.append(str(err))

    def _dead_letter(self, msg: Message, reason: str) -> None:
        reason = mask_pii(reason)
        self.counts.dead_lettered += 1
        key = reason.split(":", 1)[0]
        self.counts.reasons[key] = self.counts.reasons.get(key, 0) + 1
        log.warning(
            "label at %s[%d]@%d to DLQ: %s", msg.topic(), msg.partition(), msg.offset(), reason
        )
        value, headers = dead_letter(msg.value(), reason)
        self.producer.produce(
            self.settings.topic_labels_dlq,
            value=value,
            key=msg.key(),
            headers=headers,
            on_delivery=self._on_delivery,
        )

    def _store(self, request: fraud_pb2.LabelRequest) -> None:
        """record_label, retried until the database answers: an outage stalls the consumer
        (offsets stay uncommitted) instead of losing labels or crash-looping."""
        pause = DB_RETRY_FIRST_SECONDS
        while True:
            try:
                result = record_label(
                    self._connect(),
                    request.transaction_id,
                    label_name(request.label),
                    request.source,
                    request.note,
                )
                break
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as err:
                log.warning("database unavailable, retrying in %.1f s: %s", pause, err)
                self._disconnect()
                if self.stop_event.wait(pause):
                    raise Interrupted("stopped while the database was unavailable") from err
                pause = min(pause * 2, DB_RETRY_MAX_SECONDS)
        if result.changed:
            self.counts.stored += 1
        else:
            self.counts.unchanged += 1

    def handle(self, msg: Message) -> None:
        """Store one message or dead-letter it (an invalid label, or one the database
        refuses for what it holds); only database outages propagate."""
        try:
            request = decode(msg.value())
            validate_label(request.transaction_id, request.label, request.source, request.note)
            refused = source_refusal(self._sources, request.source, "a Kafka producer")
            if refused is not None:
                self._dead_letter(msg, refused)
                return
            self._store(request)
        except LabelError as err:
            self._dead_letter(msg, str(err))
        except psycopg2.Error as err:
            reason = refusal(err)
            if reason is None:
                raise
            self._dead_letter(msg, reason)

    def _commit(self, batch: list[Message]) -> None:
        """Commit after every DLQ message of the batch is acknowledged by the broker."""
        if self.producer.flush(30) > 0 or self._delivery_errors:
            errors, self._delivery_errors = self._delivery_errors, []
            raise KafkaException(
                f"DLQ delivery failed, offsets not committed: {errors or 'timeout'}"
            )
        self.consumer.commit(offsets=next_offsets(batch), asynchronous=False)

    def poll_once(self, timeout: float = 1.0) -> int:
        """Process one batch; returns how many messages it handled."""
        batch = consume_messages(self.consumer, BATCH_SIZE, timeout)
        for msg in batch:
            self.handle(msg)
        if batch:
            self._commit(batch)
        return len(batch)

    def run(self) -> Counts:
        """Consume until stop() (SIGTERM/SIGINT); the batch in hand is finished first."""
        self.consumer.subscribe([self.settings.topic_labels])
        log.info(
            "consuming %s (DLQ %s)", self.settings.topic_labels, self.settings.topic_labels_dlq
        )
        try:
            while not self.stop_event.is_set():
                self.poll_once(POLL_SECONDS)
        except Interrupted as err:
            log.warning("%s; the batch in hand will be redelivered", err)
        finally:
            self.close()
        log.info("stopped: %s", self.counts)
        return self.counts

    def stop(self, *_args) -> None:
        self.stop_event.set()

    def close(self) -> None:
        self.consumer.close()
        self.producer.flush(10)
        self._disconnect()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", default=DEFAULT_GROUP, help="Kafka consumer group id")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level)
    if not settings.database_url:
        log.error("DATABASE_URL is not set: labels have nowhere to go")
        return 2
    consumer = LabelConsumer(settings, group=args.group)
    signal.signal(signal.SIGTERM, consumer.stop)
    signal.signal(signal.SIGINT, consumer.stop)
    consumer.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
