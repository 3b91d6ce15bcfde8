"""No card number, CVV or e-mail address reaches a serving log. The server and the scorer
run as real processes at DEBUG level; transactions and labels carrying a PAN, a CVV and an
e-mail go through every door (ingestion, inline scoring, the dead-letter path, labels),
then every log written by the serving tests of this session is scanned."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
from confluent_kafka import Producer

from fraudops.proto_gen.fraud.v1 import fraud_pb2, fraud_pb2_grpc
from tests.helpers.serving_env import (
    channel_to,
    consume,
    scored_ids,
    service_process,
    transaction,
    unique_ids,
    wait_serving,
    wait_until,
)

pytestmark = pytest.mark.slow

PAN = "4111 1111 1111 1111"
EMAIL = "alice.victim@example.com"
CVV = "cvv 737"
LEAKS = [
    re.compile(r"4111[ -]?1111[ -]?1111[ -]?1111"),
    re.compile(re.escape(EMAIL)),
    re.compile(r"(?i)cvv\W{0,3}737"),
]


def _send_pii_everywhere(settings, port: int, ids: list[str]) -> None:
    with channel_to(port, settings.client_token) as ch:
        wait_serving(ch)
        ingestion = fraud_pb2_grpc.FraudIngestionStub(ch)
        scoring = fraud_pb2_grpc.FraudScoringStub(ch)
        feedback = fraud_pb2_grpc.FeedbackStub(ch)
        for n, tx_id in enumerate(ids):
            tx = transaction(n, transaction_id=tx_id, channel=f"pos {PAN} {EMAIL}")
            ingestion.SendTransaction(tx, timeout=30)
            scoring.Score(tx, timeout=30)
        bad = transaction(99, type=f"{PAN} {EMAIL} {CVV}")
        for call in (ingestion.SendTransaction, scoring.Score):
            with pytest.raises(grpc.RpcError):
                call(bad, timeout=30)
        wait_until(lambda: scored_ids(settings.database_url, ids[:1]), "an inline score stored")
        note = f"card {PAN} {CVV}, customer {EMAIL}"
        label = fraud_pb2.LabelRequest(
            transaction_id=ids[0], label=fraud_pb2.FRAUD, source="test:pii", note=note
        )
        feedback.SubmitLabel(label, timeout=30)
        with pytest.raises(grpc.RpcError):
            feedback.SubmitLabel(
                fraud_pb2.LabelRequest(transaction_id=EMAIL, label=fraud_pb2.FRAUD, source=PAN)
            )
    # A poison message whose validation error quotes the PAN, logged by the scorer.
    producer = Producer(settings.kafka_config())
    producer.produce(settings.topic_raw, key=b"1", value=bad.SerializeToString())
    assert producer.flush(30) == 0


def test_no_pan_cvv_or_email_in_any_serving_log(
    v1_settings,
    kafka_settings,
    database_url,
    client_token,
    tmp_path,
    tmp_path_factory,
):
    settings = v1_settings(
        "test-pii", database_url=database_url, log_level="DEBUG", client_token=client_token
    )
    ids = unique_ids("pii", 5)
    logs = tmp_path / "logs"
    logs.mkdir()
    with (
        service_process("serving.server", settings, logs / "server.log"),
        service_process("serving.scorer", settings, logs / "scorer.log"),
    ):
        _send_pii_everywhere(settings, settings.grpc_port, ids)
        wait_until(lambda: consume(kafka_settings, settings.topic_dlq, 1, timeout=5), "the DLQ")
    scorer_log = (logs / "scorer.log").read_text()
    assert "[PAN ****1111]" in scorer_log and "[EMAIL]" in scorer_log  # masked, not dropped
    written = sorted(Path(tmp_path_factory.getbasetemp()).rglob("*.log"))
    assert logs / "server.log" in written
    for path in written:
        text = path.read_text(errors="replace")
        for leak in LEAKS:
            assert not leak.search(text), f"{leak.pattern} found in {path}"
