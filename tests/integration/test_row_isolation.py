"""One row Postgres refuses never takes its neighbours down: the score writer isolates it,
the stream scorer dead-letters it with the database's reason and goes on, and an inline
score beside it is stored; inline scores Postgres cannot take go to their own topic.

The refused rows bypass the validator on purpose (scored straight through the core, or
valid transactions that break a constraint this test adds to its own database)."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest
from confluent_kafka import Producer

from fraudops import db
from fraudops.proto_gen.fraud.v1 import fraud_pb2, fraud_pb2_grpc
from fraudops.schema import proto_to_dict
from serving import metrics
from serving.model_store import ModelStore
from serving.persistence import InlineDeadLetters, InlineScoreSink, ScoreWriter
from serving.scoring import ScoringCore
from serving.server import ServingApp
from testkit.stack import fresh_database
from tests.helpers.serving_env import (
    channel_to,
    committed,
    consume,
    insert_scored,
    issue_token,
    publish_model,
    query,
    scored_ids,
    service_process,
    stop_process,
    transaction,
    unique_ids,
    wait_serving,
    wait_until,
)

REFUSED_CHANNEL = "refused-by-db"  # valid for the schema, refused by this test's constraint
REFUSED_SOURCE = "chargeback:refused-by-db"  # the same for a label


@pytest.fixture
def strict_database(database_url: str) -> Iterator[str]:
    """A database of its own that refuses REFUSED_CHANNEL scores and REFUSED_SOURCE labels."""
    with fresh_database(database_url, "fraudops_strict") as url:
        with db.connect(url) as conn, conn.cursor() as cur:
            cur.execute(
                "ALTER TABLE scored_transactions ADD CONSTRAINT test_refused_channel "
                "CHECK (channel IS DISTINCT FROM %s)",
                (REFUSED_CHANNEL,),
            )
            cur.execute(
                "ALTER TABLE feedback_labels ADD CONSTRAINT test_refused_source "
                "CHECK (source <> %s)",
                (REFUSED_SOURCE,),
            )
        yield url


@pytest.fixture
def core(built_models, serving_root) -> ScoringCore:
    publish_model(built_models, serving_root, "v1")
    store = ModelStore(serving_root)
    store.load_latest()
    return ScoringCore(store)


def dead_letter_count(reason: str) -> float:
    value = metrics.REGISTRY.get_sample_value
    return value("fraudops_inline_scores_dead_lettered_total", {"reason": reason}) or 0.0


def test_the_writer_isolates_each_refused_row_and_writes_the_rest(core, strict_database):
    ids = unique_ids("isolate", 12)
    txs = [proto_to_dict(transaction(n, transaction_id=i)) for n, i in enumerate(ids)]
    txs[3]["channel"] = "a\x00b"  # class 22: Postgres text cannot hold NUL
    txs[5]["channel"] = "web\ud800"  # no UTF-8 encoding at all
    txs[7]["channel"] = REFUSED_CHANNEL  # class 23: the check constraint
    batches = [(core.score(txs[:6]), "stream"), (core.score(txs[6:]), "stream")]
    writer = ScoreWriter(strict_database)
    try:
        result = writer.write(batches)
        again = writer.write(batches)
    finally:
        writer.close()
    refused = {(r.batch, r.row): r.reason for r in result.refused}
    assert set(refused) == {(0, 3), (0, 5), (1, 1)}
    assert refused[(0, 3)].startswith("database refused the row (22021)")
    assert refused[(0, 5)].startswith("not valid UTF-8")
    assert refused[(1, 1)].startswith("database refused the row (23514)")
    assert "test_refused_channel" in refused[(1, 1)]
    good = [i for n, i in enumerate(ids) if n not in (3, 5, 7)]
    assert result.inserted == len(good)
    assert sorted(scored_ids(strict_database, ids)) == sorted(good)
    assert again.inserted == 0 and len(again.refused) == 3  # redelivery: written once


@pytest.fixture
def settings(v1_settings, strict_database):
    """Server and scorer settings on the strict database and this test's topics."""
    return v1_settings("test-isolate", database_url=strict_database)


@pytest.mark.slow
def test_the_scorer_dead_letters_a_refused_row_and_goes_on(settings, kafka_settings, tmp_path):
    ids = unique_ids("stream-isolate", 40)
    channels = ["web"] * 17 + [REFUSED_CHANNEL] + ["web"] * 22
    sent = {
        i: transaction(n, user_id=3, transaction_id=i, channel=channels[n])
        for n, i in enumerate(ids)
    }
    producer = Producer(kafka_settings.kafka_config())
    for tx in sent.values():
        producer.produce(settings.topic_raw, key=b"3", value=tx.SerializeToString())
    assert producer.flush(30) == 0
    url, topic = settings.database_url, settings.topic_raw
    good = [i for n, i in enumerate(ids) if n != 17]
    small = replace(settings, scorer_batch_size=10)
    with service_process("serving.scorer", small, tmp_path / "scorer.log") as scorer:
        wait_until(lambda: len(scored_ids(url, ids)) == len(good), "every valid row stored", 120)
        group = settings.consumer_group
        wait_until(lambda: committed(kafka_settings, group, topic) == len(ids), "offsets", 60)
        assert scorer.poll() is None, "the scorer must still be running"
        assert stop_process(scorer, signal.SIGTERM) == 0
    assert sorted(scored_ids(url, ids)) == sorted(good)
    [dead] = consume(kafka_settings, settings.topic_dlq, 1)
    assert dead.value() == sent[ids[17]].SerializeToString() and dead.key() == b"3"
    reason = dict(dead.headers())["error"].decode()
    assert reason.startswith("database refused the row (23514)"), reason


def test_an_inline_score_beside_a_refused_row_is_stored(settings, kafka_settings, strict_database):
    ids = unique_ids("inline-isolate", 6)
    txs = [
        transaction(n, transaction_id=i, channel=REFUSED_CHANNEL if n == 2 else "web")
        for n, i in enumerate(ids)
    ]
    before = dead_letter_count("refused")
    token = issue_token(strict_database, "tests-all")  # before the server loads its callers
    server = ServingApp(settings, max_workers=4)
    server.start()
    try:
        with channel_to(server.port, token) as ch:
            wait_serving(ch)
            stub = fraud_pb2_grpc.FraudScoringStub(ch)
            answered = stub.ScoreBatch(fraud_pb2.ScoreBatchRequest(transactions=txs), timeout=10)
            assert [s.transaction_id for s in answered.scores] == ids
            assert server.inline.sink.flush()
            assert stub.Score(transaction(99), timeout=10).model_version == "v1"  # still up
    finally:
        server.stop(grace=1)
    assert sorted(scored_ids(strict_database, ids)) == sorted(ids[:2] + ids[3:])
    [dead] = consume(kafka_settings, settings.topic_inline_dlq, 1)
    row = json.loads(dead.value())
    assert (row["transaction_id"], row["source"]) == (ids[2], "inline")
    assert row["score"] == pytest.approx(answered.scores[2].score)
    assert dict(dead.headers())["error"].decode().startswith("database refused the row (23514)")
    assert dead_letter_count("refused") == before + 1


def test_inline_scores_go_to_kafka_while_postgres_is_unreachable(
    core, database_url, kafka_settings, kafka_topics
):
    inline_dlq = kafka_topics()["topic_inline_dlq"]
    missing = db.with_database(database_url, f"missing_{uuid.uuid4().hex[:8]}")
    ids = unique_ids("unreachable", 6)
    txs = [proto_to_dict(transaction(n, transaction_id=i)) for n, i in enumerate(ids)]
    counts = {r: dead_letter_count(r) for r in ("unwritten", "queue_full")}
    producer = Producer(kafka_settings.kafka_config())
    sink = InlineScoreSink(
        ScoreWriter(missing, attempts=2),
        InlineDeadLetters(producer, inline_dlq),
        max_queued_rows=5,
    )
    sink.submit(core.score(txs[:3]))  # waits for Postgres, then goes to Kafka
    sink.submit(core.score(txs[3:]))  # the queue already holds 3 of 5 rows: straight to Kafka
    assert sink.flush(timeout=60)
    sink.close()
    dead = consume(kafka_settings, inline_dlq, len(ids))
    reasons = {json.loads(m.value())["transaction_id"]: dict(m.headers())["error"] for m in dead}
    assert sorted(reasons) == sorted(ids)
    assert all(reasons[i].startswith(b"not written to Postgres") for i in ids[:3])
    assert all(reasons[i].startswith(b"inline queue full") for i in ids[3:])
    assert dead_letter_count("unwritten") == counts["unwritten"] + 3
    assert dead_letter_count("queue_full") == counts["queue_full"] + 3


@pytest.mark.slow
def test_the_label_consumer_dead_letters_a_refused_label_and_goes_on(
    settings, kafka_settings, tmp_path
):
    url = settings.database_url
    ids = unique_ids("label-isolate", 5)
    for tx_id in ids:
        insert_scored(url, tx_id)
    sources = ["chargeback:visa"] * 2 + [REFUSED_SOURCE] + ["chargeback:visa"] * 2
    sent = [
        fraud_pb2.LabelRequest(transaction_id=i, label=fraud_pb2.FRAUD, source=source)
        for i, source in zip(ids, sources, strict=True)
    ]
    producer = Producer(kafka_settings.kafka_config())
    for request in sent:
        producer.produce(settings.topic_labels, key=b"7", value=request.SerializeToString())
    assert producer.flush(30) == 0
    group, topic = f"labels-{uuid.uuid4().hex[:8]}", settings.topic_labels
    log = tmp_path / "labels.log"
    with service_process("serving.label_consumer", settings, log, "--group", group) as proc:
        wait_until(lambda: committed(kafka_settings, group, topic) == len(ids), "offsets", 60)
        assert proc.poll() is None, "the label consumer must still be running"
        assert stop_process(proc) == 0
    stored = query(
        url, "SELECT transaction_id FROM feedback_labels WHERE transaction_id = ANY(%s)", (ids,)
    )
    assert sorted(r[0] for r in stored) == sorted(ids[:2] + ids[3:])
    [dead] = consume(kafka_settings, settings.topic_labels_dlq, 1)
    assert dead.value() == sent[2].SerializeToString()
    reason = dict(dead.headers())["error"].decode()
    assert reason.startswith("database refused the row (23514)"), reason
