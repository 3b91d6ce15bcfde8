"""The scorer SIGKILLed while it dead-letters: a third of the stream is invalid, so the
DLQ is being written when the process dies. Restarted, every invalid message is on the
DLQ (at least once: a batch produced but not committed is produced again) and every valid
one is stored once."""

from __future__ import annotations

import signal
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from fraudops.proto_gen.fraud.v1 import fraud_pb2
from tests.faults.support import resumed
from tests.helpers.serving_env import (
    consume,
    make_settings,
    publish_model,
    scored_ids,
    service_process,
    stop_process,
    transaction,
    unique_ids,
    wait_until,
)

N = 3000


def on_topic(bootstrap: str, topic: str, partitions: int = 3) -> int:
    """Messages on a topic so far (the sum of its partitions' high watermarks)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"wm-{uuid.uuid4().hex}"})
    try:
        marks = [
            consumer.get_watermark_offsets(TopicPartition(topic, p), 10) for p in range(partitions)
        ]
        return sum(high for _low, high in marks)
    finally:
        consumer.close()


def stream(bootstrap: str, topic: str, ids: list[str]) -> set[str]:
    """Every third transaction invalid (a negative amount); returns the invalid ids."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    invalid = set()
    for n, tx_id in enumerate(ids):
        amount = -1.0 if n % 3 == 0 else 10.0 + n % 50
        invalid |= {tx_id} if amount < 0 else set()
        tx = transaction(n, user_id=1 + n % 11, transaction_id=tx_id, amount=amount)
        producer.produce(topic, key=str(tx.user_id), value=tx.SerializeToString())
        producer.poll(0)
    assert producer.flush(60) == 0
    return invalid


@pytest.fixture
def settings(built_models, serving_root, kafka_bootstrap, kafka_topics, database_url):
    publish_model(built_models, serving_root, "v1")
    return make_settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        database_url=database_url,
        model_dir=serving_root,
        consumer_group=f"fault-kill-{uuid.uuid4().hex[:8]}",
        scorer_batch_size=50,
        **kafka_topics(),
    )


def test_a_scorer_killed_while_dead_lettering_loses_nothing_on_restart(
    settings, kafka_bootstrap, tmp_path, fault_report
):
    ids = unique_ids("fault-kill", N)
    invalid = stream(kafka_bootstrap, settings.topic_raw, ids)
    valid = [i for i in ids if i not in invalid]
    url, dlq = settings.database_url, settings.topic_dlq
    with service_process("serving.scorer", settings, tmp_path / "scorer-1.log") as first:
        wait_until(lambda: on_topic(kafka_bootstrap, dlq) >= 50, "the DLQ being written", 120)
        stop_process(first, signal.SIGKILL)
    killed, before = time.monotonic(), len(scored_ids(url, ids))
    assert before < len(valid), "killed too late: the stream was already done"
    with service_process("serving.scorer", settings, tmp_path / "scorer-2.log") as second:
        resumed(lambda: len(scored_ids(url, ids)), "the restarted scorer to write")
        recovery = time.monotonic() - killed
        wait_until(lambda: len(scored_ids(url, ids)) == len(valid), "every valid one stored", 180)
        dead = consume(kafka_bootstrap, dlq, len(invalid))
        assert second.poll() is None
    dead_ids = [fraud_pb2.TransactionRequest.FromString(m.value()).transaction_id for m in dead]
    rows = scored_ids(url, ids)
    fault_report(
        "scorer SIGKILLed while writing the DLQ", sent=N, scored=len(set(rows)),
        lost=len(valid) - len(set(rows)) + len(invalid - set(dead_ids)),
        twice=len(rows) - len(set(rows)), recovery_s=recovery,
        note=f"{len(invalid)} invalid: all on the DLQ, {len(dead_ids) - len(set(dead_ids))} "
        "of them twice (at-least-once)",
    )  # fmt: skip
    assert set(dead_ids) == invalid
    assert sorted(rows) == sorted(valid)
