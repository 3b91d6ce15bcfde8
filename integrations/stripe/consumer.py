"""The Stripe event consumer: verified webhook events (Kafka `stripe_events`, as the
webhook endpoint received them) become transactions on `raw_transactions` and labels on
`transaction_labels`, where the scorer and the label consumer take them like any other.

Idempotent by event id: each event is claimed in `stripe_events` and each payment in
`stripe_payments` (payment_intent.succeeded and charge.succeeded describe one payment)
inside one database transaction that commits only after Kafka has what the event became,
and the offset is committed after that. A crash in between redelivers the event, which
then re-publishes the same message (the scorer writes a transaction once; the same label
again changes nothing); an event already claimed changes nothing.

    python -m integrations.stripe.consumer [--group fraudops-stripe]
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from dataclasses import dataclass
from typing import Any

import psycopg2
from confluent_kafka import Message

from fraudops.db import connect
from fraudops.pii import configure_logging
from fraudops.schema import InvalidTransaction, TimestampWindow, proto_to_dict
from fraudops.schema import validate_transaction as validate
from fraudops.settings import Settings, load_settings
from integrations.stripe.events import PAYMENT_EVENTS, NotAPayment, label_of, transaction
from serving.kafka_io import (
    AckingProducer,
    consume_messages,
    make_consumer,
    make_producer,
    next_offsets,
)

log = logging.getLogger("fraudops.stripe.consumer")

DEFAULT_GROUP = "fraudops-stripe"
BATCH_SIZE = 100
POLL_SECONDS = 1.0
DB_RETRY_SECONDS = 1.0

_CLAIM = """
INSERT INTO stripe_events (event_id, type, livemode, object_id, transaction_id, outcome,
                           event_created)
VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING RETURNING 1
"""
_CLAIM_PAYMENT = (
    "INSERT INTO stripe_payments (transaction_id, event_id) VALUES (%s, %s) "
    "ON CONFLICT (transaction_id) DO NOTHING RETURNING 1"
)
_OUTCOME = "UPDATE stripe_events SET outcome = %s WHERE event_id = %s"


@dataclass(frozen=True)
class Outcome:
    """What one event becomes: a message for a topic (or none), and the word recorded."""

    kind: str  # transaction, label, ignored, invalid
    transaction_id: str = ""
    topic: str = ""
    key: str = ""
    value: bytes = b""
    detail: str = ""


def outcome_of(event: dict[str, Any], settings: Settings) -> Outcome:
    """Map one event to its outcome; a payment must pass the transaction schema."""
    kind, obj = event["type"], event["data"]["object"]
    if kind in PAYMENT_EVENTS:
        try:
            msg = transaction(obj)
            validate(proto_to_dict(msg), TimestampWindow.from_settings(settings))
        except NotAPayment as err:
            if kind == "payment_intent.succeeded" and err.field == "customer":
                return Outcome("ignored")  # a guest's card is named by charge.succeeded
            return Outcome("invalid", detail=str(err))
        except InvalidTransaction as err:
            return Outcome("invalid", detail=str(err))
        return Outcome(
            "transaction", msg.transaction_id, settings.topic_raw, str(msg.user_id),
            msg.SerializeToString(),
        )  # fmt: skip
    label = label_of(kind, obj)
    if label is None or not label.transaction_id:
        return Outcome("ignored")
    tx_id, value = label.transaction_id, label.request().SerializeToString()
    return Outcome("label", tx_id, settings.topic_labels, tx_id, value)


class StripeConsumer:
    """One member of the Stripe consumer group: claim, publish, commit."""

    def __init__(self, settings: Settings, group: str = DEFAULT_GROUP):
        self.settings = settings
        self.stop_event = threading.Event()
        self.counts: dict[str, int] = {}
        self.consumer = make_consumer(settings, group, report_lag=False)
        self.producer = AckingProducer(make_producer(settings))
        self.conn = None

    def _connection(self):
        if self.conn is None or self.conn.closed:
            self.conn = connect(self.settings.database_url)
        return self.conn

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def process(self, event: dict[str, Any]) -> str:
        """Claim and publish one event; returns what it became (`duplicate` if seen)."""
        out = outcome_of(event, self.settings)
        obj = event["data"]["object"]
        row = (
            event["id"], event["type"], bool(event.get("livemode")), str(obj.get("id") or ""),
            out.transaction_id or None, out.kind, int(event.get("created") or 0),
        )  # fmt: skip
        conn = self._connection()
        with conn, conn.cursor() as cur:
            cur.execute(_CLAIM, row)
            if cur.fetchone() is None:
                return "duplicate"
            if out.kind == "transaction":
                cur.execute(_CLAIM_PAYMENT, (out.transaction_id, event["id"]))
                if cur.fetchone() is None:
                    cur.execute(_OUTCOME, ("duplicate_payment", event["id"]))
                    return "duplicate_payment"
            if out.topic:  # Kafka has it before the claim commits
                self.producer.send(out.topic, out.key, out.value)
        if out.detail:
            log.warning("stripe event %s (%s): %s", event["id"], event["type"], out.detail)
        return out.kind

    def handle(self, msg: Message) -> None:
        """One message; a database outage is retried until it answers or we stop."""
        try:
            event = json.loads(msg.value())
            event["id"], event["type"], event["data"]["object"]  # noqa: B018 - shape check
        except (ValueError, TypeError, KeyError) as err:
            log.error("not a Stripe event at %s@%d: %s", msg.topic(), msg.offset(), err)
            self._count("undecodable")
            return
        while not self.stop_event.is_set():
            try:
                self._count(self.process(event))
                return
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as err:
                log.warning("database unavailable, retrying: %s", err)
                self.conn = None
                self.stop_event.wait(DB_RETRY_SECONDS)
        raise InterruptedError("stopped while the database was unavailable")

    def poll_once(self, timeout: float = POLL_SECONDS) -> int:
        batch = consume_messages(self.consumer, BATCH_SIZE, timeout)
        for msg in batch:
            self.handle(msg)
        if batch:
            self.consumer.commit(offsets=next_offsets(batch), asynchronous=False)
        return len(batch)

    def run(self) -> dict[str, int]:
        """Consume until stop(); an interrupted batch stays uncommitted (redelivered)."""
        self.consumer.subscribe([self.settings.topic_stripe_events])
        log.info("consuming %s", self.settings.topic_stripe_events)
        try:
            while not self.stop_event.is_set():
                self.poll_once()
        except InterruptedError as err:
            log.warning("%s; the batch in hand will be redelivered", err)
        finally:
            self.consumer.close()
            self.producer.close()
            if self.conn is not None:
                self.conn.close()
        log.info("stopped: %s", self.counts)
        return self.counts

    def stop(self, *_args) -> None:
        self.stop_event.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", default=DEFAULT_GROUP, help="Kafka consumer group id")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level)
    if not settings.database_url:
        log.error("DATABASE_URL is not set: processed events cannot be recorded")
        return 2
    consumer = StripeConsumer(settings, args.group)
    signal.signal(signal.SIGTERM, consumer.stop)
    signal.signal(signal.SIGINT, consumer.stop)
    consumer.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
