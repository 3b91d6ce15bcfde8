"""The Stripe event consumer: verified webhook events (Kafka `stripe_events`, as the
webhook endpoint received them) become transactions on `raw_transactions` and labels on
`transaction_labels`, where the scorer and the label consumer take them like any other.

Idempotent by event id: each event is claimed in `stripe_events` and each payment in
`stripe_payments` (payment_intent.succeeded and charge.succeeded describe one payment)
inside one database transaction that commits only after Kafka has what the event became,
and the offset is committed after that. A crash in between redelivers the event, which
then re-publishes the same message (the scorer writes a transaction once; the same label
again changes nothing); an event already claimed changes nothing.

A message that is not an event, or an event whose payment or label fraudops cannot take,
goes unclaimed to `stripe_events.dlq` with the reason (naming the field) in the `error`
header, and the events behind it go on; database and Kafka outages are retried. The loop
is serving.consumer_loop's, as the label consumer's.

    python -m integrations.stripe.consumer [--group fraudops-stripe]
"""

from __future__ import annotations

import argparse
import logging
import signal
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message

from fraudops.schema import InvalidTransaction, TimestampWindow, proto_to_dict
from fraudops.schema import validate_transaction as validate
from fraudops.settings import Settings, settings_with_database
from integrations.stripe.events import (
    PAYMENT_EVENTS,
    InvalidEvent,
    NotAPayment,
    label_of,
    parse_event,
    reference,
    transaction,
    unix_seconds,
)
from serving.consumer_loop import ConsumerLoop, DatabaseHandler, Rejected
from serving.kafka_io import AckingProducer
from serving.labels import LabelError, validate_label

log = logging.getLogger("fraudops.stripe.consumer")

DEFAULT_GROUP = "fraudops-stripe"
BATCH_SIZE = 100

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

    kind: str  # transaction, label, ignored
    transaction_id: str = ""
    topic: str = ""
    key: str = ""
    value: bytes = b""


def decode(value: bytes | None) -> dict[str, Any]:
    """The event a message holds, as the webhook received it; InvalidEvent naming the
    field for anything the consumer cannot record."""
    event = parse_event(value)
    event["created"] = unix_seconds(event.get("created"), "event.created", 0)
    return event


def outcome_of(event: dict[str, Any], settings: Settings) -> Outcome:
    """Map one event to its outcome; a payment must pass the transaction schema and a
    label the label rules (InvalidEvent, InvalidTransaction or LabelError otherwise)."""
    kind, obj = event["type"], event["data"]["object"]
    if kind in PAYMENT_EVENTS:
        try:
            msg = transaction(obj)
        except NotAPayment as err:
            if kind == "payment_intent.succeeded" and err.field == "customer":
                return Outcome("ignored")  # a guest's card is named by charge.succeeded
            raise
        validate(proto_to_dict(msg), TimestampWindow.from_settings(settings))
        return Outcome(
            "transaction", msg.transaction_id, settings.topic_raw, str(msg.user_id),
            msg.SerializeToString(),
        )  # fmt: skip
    label = label_of(kind, obj)
    if label is None or not label.transaction_id:
        return Outcome("ignored")
    validate_label(label.transaction_id, label.label, label.source, label.note)
    tx_id, value = label.transaction_id, label.request().SerializeToString()
    return Outcome("label", tx_id, settings.topic_labels, tx_id, value)


class StripeConsumer(DatabaseHandler):
    """What the Stripe consumer does with one event: claim and publish it (the loop around
    it polls, retries outages, dead-letters and commits)."""

    def __init__(self, settings: Settings, producer: AckingProducer):
        super().__init__(settings.database_url)
        self.settings = settings
        self.producer = producer

    def process(self, event: dict[str, Any]) -> str:
        """Claim and publish one event; returns what it became (`duplicate` if seen)."""
        out = outcome_of(event, self.settings)
        obj = event["data"]["object"]
        row = (
            event["id"], event["type"], bool(event.get("livemode")), reference(obj, "id"),
            out.transaction_id or None, out.kind, event["created"],
        )  # fmt: skip
        conn = self.connection()
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
        return out.kind

    def handle(self, msg: Message) -> str:
        """One message; an event that is not one, or a payment or label fraudops cannot
        take, is rejected with the reason (and dead-lettered, unclaimed)."""
        try:
            return self.process(decode(msg.value()))
        except (InvalidEvent, InvalidTransaction, LabelError) as err:
            raise Rejected(str(err)) from err


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", default=DEFAULT_GROUP, help="Kafka consumer group id")
    args = parser.parse_args(argv)
    settings = settings_with_database("processed events cannot be recorded")
    if settings is None:
        return 2
    loop = ConsumerLoop(
        settings, args.group, settings.topic_stripe_events, settings.topic_stripe_events_dlq,
        BATCH_SIZE,
    )  # fmt: skip
    signal.signal(signal.SIGTERM, loop.stop)
    signal.signal(signal.SIGINT, loop.stop)
    loop.run(StripeConsumer(settings, loop.producer))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
