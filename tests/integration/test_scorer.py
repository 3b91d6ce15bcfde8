"""The stream scorer as a real process (`python -m serving.scorer`) on real Kafka and
Postgres: exactly-once effects in scored_transactions, poison messages dead-lettered with
their reason, a scorer SIGKILLed mid-stream that loses and duplicates nothing, and a slow
database write that holds back no score from Kafka and no offset past an unwritten row."""

from __future__ import annotations

import signal
from collections import Counter
from dataclasses import replace

import psycopg2
import pytest
from confluent_kafka import Producer

from fraudops.proto_gen.fraud.v1 import fraud_pb2, fraud_pb2_grpc
from serving.server import ServingApp
from tests.helpers.serving_env import (
    channel_to,
    committed,
    consume,
    query,
    scored_ids,
    service_process,
    stop_process,
    transaction,
    unique_ids,
    wait_serving,
    wait_until,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def settings(v1_settings, database_url, client_token):
    return v1_settings("test-scorer", database_url=database_url, client_token=client_token)


def produce_raw(settings, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = Producer(settings.kafka_config())
    for key, value in messages:
        producer.produce(settings.topic_raw, key=key, value=value)
        producer.poll(0)
    assert producer.flush(30) == 0


def stream_rows(url: str, ids: list[str]) -> list[tuple]:
    return query(
        url,
        "SELECT transaction_id, source, model_version FROM scored_transactions "
        "WHERE transaction_id = ANY(%s)",
        (ids,),
    )


def test_sent_transactions_are_scored_exactly_once(settings, tmp_path):
    server = ServingApp(settings, max_workers=8)
    server.start()
    ids = unique_ids("stream", 60)
    try:
        with channel_to(server.port, settings.client_token) as ch:
            wait_serving(ch)
            stub = fraud_pb2_grpc.FraudIngestionStub(ch)
            for n, tx_id in enumerate(ids):
                stub.SendTransaction(transaction(n, transaction_id=tx_id), timeout=30)
    finally:
        server.stop(grace=2)
    with service_process("serving.scorer", settings, tmp_path / "scorer.log") as scorer:
        url = settings.database_url
        wait_until(lambda: len(scored_ids(url, ids)) == len(ids), "all scores in Postgres", 120)
        assert stop_process(scorer, signal.SIGTERM) == 0
    rows = stream_rows(settings.database_url, ids)
    assert sorted(r[0] for r in rows) == sorted(ids)
    assert {(r[1], r[2]) for r in rows} == {("stream", "v1")}
    messages = consume(settings, settings.topic_scores, len(ids))
    responses = [fraud_pb2.ScoreResponse.FromString(m.value()) for m in messages]
    assert Counter(r.transaction_id for r in responses) == Counter(ids)
    assert {r.model_version for r in responses} == {"v1"}


def test_poison_messages_go_to_the_dlq_and_later_ones_are_scored(settings, tmp_path):
    ids = unique_ids("after-poison", 10)
    nan = transaction(1, transaction_id="poison-nan", amount=float("nan")).SerializeToString()
    garbage = b"\xff\xfe not a protobuf \x00\x01"
    good = [(str(9).encode(), transaction(n, user_id=9, transaction_id=i).SerializeToString())
            for n, i in enumerate(ids)]  # fmt: skip
    produce_raw(settings, [(b"9", garbage), (b"9", nan), *good])
    with service_process("serving.scorer", settings, tmp_path / "scorer.log"):
        url = settings.database_url
        wait_until(lambda: len(scored_ids(url, ids)) == len(ids), "scores after the poison", 120)
        dead = consume(settings, settings.topic_dlq, 2)
    by_value = {m.value(): m for m in dead}
    assert set(by_value) == {garbage, nan}
    reasons = {v: dict(m.headers())["error"].decode() for v, m in by_value.items()}
    assert reasons[nan].startswith("amount: is NaN")
    assert reasons[garbage].startswith("undecodable TransactionRequest")
    assert all(m.key() == b"9" for m in dead)
    assert scored_ids(settings.database_url, ["poison-nan"]) == []


def test_a_scorer_killed_mid_stream_loses_and_duplicates_nothing(settings, tmp_path):
    ids = unique_ids("kill", 3000)
    produce_raw(
        settings,
        [(str(1 + n % 50).encode(),
          transaction(n, user_id=1 + n % 50, transaction_id=i).SerializeToString())
         for n, i in enumerate(ids)],
    )  # fmt: skip
    small = replace(settings, scorer_batch_size=40)
    url = settings.database_url
    with service_process("serving.scorer", small, tmp_path / "scorer-1.log") as first:
        wait_until(lambda: len(scored_ids(url, ids)) >= 300, "the scorer to be mid-stream", 120)
        stop_process(first, signal.SIGKILL)
    killed_at = len(scored_ids(url, ids))
    assert killed_at < len(ids), "the kill should land mid-stream"
    with service_process("serving.scorer", settings, tmp_path / "scorer-2.log") as second:
        wait_until(lambda: len(scored_ids(url, ids)) == len(ids), "every transaction scored", 180)
        assert stop_process(second, signal.SIGTERM) == 0
    stored = scored_ids(url, ids)
    assert len(stored) == len(set(stored)) == len(ids)
    assert set(stored) == set(ids)
    messages = consume(settings, settings.topic_scores, len(ids))
    on_kafka = {fraud_pb2.ScoreResponse.FromString(m.value()).transaction_id for m in messages}
    assert on_kafka == set(ids)  # redelivered batches may repeat on Kafka, never in Postgres


def raw_messages(ids: list[str]) -> list[tuple[bytes, bytes]]:
    return [(str(1 + n % 7).encode(),
             transaction(n, user_id=1 + n % 7, transaction_id=i).SerializeToString())
            for n, i in enumerate(ids)]  # fmt: skip


def test_a_held_database_write_holds_back_no_score_and_no_offset(settings, tmp_path):
    """While the table is locked, the scorer goes on scoring batch after batch (more than
    one write's worth) to Kafka; the group commits nothing past what Postgres holds, and
    once the lock goes every held row is stored once."""
    small = replace(settings, scorer_batch_size=10)
    url = settings.database_url
    first, held = unique_ids("before-lock", 10), unique_ids("held", 60)

    def done() -> int:
        return committed(small, small.consumer_group, small.topic_raw)

    with service_process("serving.scorer", small, tmp_path / "scorer.log") as scorer:
        produce_raw(small, raw_messages(first))
        wait_until(lambda: done() == len(first), "the first batch written and committed", 120)
        blocker = psycopg2.connect(url)
        try:
            with blocker.cursor() as cur:  # inserts wait for this transaction; reads do not
                cur.execute("LOCK TABLE scored_transactions IN EXCLUSIVE MODE")
            produce_raw(small, raw_messages(held))
            messages = consume(small, small.topic_scores, len(first) + len(held))
            on_kafka = {fraud_pb2.ScoreResponse.FromString(m.value()).transaction_id
                        for m in messages}  # fmt: skip
            assert set(held) <= on_kafka  # six batches of ten scored while no write finished
            assert scored_ids(url, held) == []
            assert done() == len(first)
        finally:
            blocker.rollback()
            blocker.close()
        wait_until(lambda: len(scored_ids(url, held)) == len(held), "the held rows stored", 120)
        wait_until(lambda: done() == len(first) + len(held), "their offsets committed", 60)
        assert stop_process(scorer, signal.SIGTERM) == 0
    stored = scored_ids(url, held)
    assert len(stored) == len(set(stored)) == len(held)
