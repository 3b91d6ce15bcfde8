"""Kafka consumer for the `transaction_labels` topic (chargeback feeds and bulk imports).

Each message is a LabelRequest; it is stored with `serving.labels.record_label`, the same
function the gRPC Feedback servicer uses. A message that cannot be decoded, or holds an
invalid label (unknown transaction included), or one the database refuses for what it
holds, goes to `transaction_labels.dlq` with its original bytes and the reason in the
`error` header; the labels around it are stored. The loop around `handle` is
serving.consumer_loop's: a database outage stalls it (retried, nothing lost), and offsets
are committed only after the database commit or the DLQ delivery of every message before
them, so a crash redelivers and never loses a label (`record_label` makes a redelivery a
no-op).

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

import psycopg2
from confluent_kafka import Message
from google.protobuf.message import DecodeError

from fraudops.proto_gen.fraud.v1 import fraud_pb2
from fraudops.settings import Settings, comma_list, settings_with_database
from serving.consumer_loop import ConsumerLoop, DatabaseHandler, Rejected
from serving.labels import LabelError, label_name, record_label, source_refusal, validate_label
from serving.persistence import refusal

log = logging.getLogger("fraudops.label_consumer")

DEFAULT_GROUP = "fraudops-labels"


def decode(value: bytes | None) -> fraud_pb2.LabelRequest:
    """Parse a LabelRequest; raise LabelError('message', ...) for bytes that are not one."""
    if not value:
        raise LabelError("message", "empty message")
    try:
        return fraud_pb2.LabelRequest.FromString(value)
    except DecodeError as err:
        raise LabelError("message", f"not a LabelRequest ({err})") from err


class LabelConsumer(DatabaseHandler):
    """What the label consumer does with one message: store it (the loop around it polls,
    retries outages, dead-letters and commits)."""

    def __init__(self, settings: Settings):
        super().__init__(settings.database_url)
        self._sources = comma_list(settings.kafka_label_sources)

    def _store(self, request: fraud_pb2.LabelRequest) -> str:
        result = record_label(
            self.connection(),
            request.transaction_id,
            label_name(request.label),
            request.source,
            request.note,
        )
        return "stored" if result.changed else "unchanged"

    def handle(self, msg: Message) -> str:
        """Store one message, or reject it (an invalid label, or one the database refuses
        for what it holds) with the reason; database outages propagate, to be retried."""
        try:
            request = decode(msg.value())
            validate_label(request.transaction_id, request.label, request.source, request.note)
            refused = source_refusal(self._sources, request.source, "a Kafka producer")
            if refused is not None:
                raise Rejected(refused)
            return self._store(request)
        except LabelError as err:
            raise Rejected(str(err)) from err
        except psycopg2.Error as err:
            reason = refusal(err)
            if reason is None:
                raise
            raise Rejected(reason) from err


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", default=DEFAULT_GROUP, help="Kafka consumer group id")
    args = parser.parse_args(argv)
    settings = settings_with_database("labels have nowhere to go")
    if settings is None:
        return 2
    loop = ConsumerLoop(settings, args.group, settings.topic_labels, settings.topic_labels_dlq)
    signal.signal(signal.SIGTERM, loop.stop)
    signal.signal(signal.SIGINT, loop.stop)
    loop.run(LabelConsumer(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
