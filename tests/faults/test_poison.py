"""Poison on raw_transactions: undecodable bytes, a message as large as the broker takes
and a transaction Postgres cannot store, at the head of a partition and among good ones.
Each goes to the dead-letter topic with its reason; every good transaction is scored."""

from __future__ import annotations

from confluent_kafka import Producer

from tests.helpers.serving_env import (
    consume,
    scored_ids,
    service_process,
    transaction,
    unique_ids,
    wait_until,
)

# The broker's limit on one record batch (message.max.bytes, 1 MiB + 12) less room for the
# record's own framing: the largest message a producer can put on the topic.
NEAR_LIMIT = 1_048_000
N_GOOD = 600


def poison(tag: str) -> dict[str, bytes]:
    """Each kind of poison, by the reason the scorer gives for it."""
    rest = len(transaction(0, transaction_id="").SerializeToString()) + 4  # + the length
    huge = transaction(0, transaction_id="x" * (NEAR_LIMIT - rest))
    nul = transaction(1, transaction_id=f"{tag}-nul", channel="a\x00b")
    return {
        "undecodable": b"\xff\xfe not a protobuf " + tag.encode(),
        "transaction_id": huge.SerializeToString(),
        "channel": nul.SerializeToString(),
    }


def test_poison_at_the_head_of_a_partition_is_dead_lettered_and_the_rest_scored(
    v1_settings, database_url, kafka_settings, tmp_path, fault_report
):
    settings = v1_settings("fault-poison", database_url=database_url, scorer_batch_size=100)
    ids = unique_ids("fault-poison", N_GOOD)
    bad = poison(ids[0])
    producer = Producer(kafka_settings.kafka_config(**{"message.max.bytes": 1_048_576}))
    topic = settings.topic_raw
    for value in bad.values():  # the head of partition 0
        producer.produce(topic, key=b"3", value=value, partition=0)
    for n, tx_id in enumerate(ids):
        value = transaction(n, user_id=3, transaction_id=tx_id).SerializeToString()
        producer.produce(topic, key=b"3", value=value, partition=n % 3)
        if n == N_GOOD // 2:  # and the same again among good ones
            for value in poison(ids[1]).values():
                producer.produce(topic, key=b"3", value=value, partition=1)
    assert producer.flush(60) == 0
    url = settings.database_url
    with service_process("serving.scorer", settings, tmp_path / "scorer.log") as scorer:
        wait_until(lambda: len(scored_ids(url, ids)) == N_GOOD, "every good one scored", 120)
        dead = consume(kafka_settings, settings.topic_dlq, 2 * len(bad))
        assert scorer.poll() is None, "the scorer must still be running"
    reasons = sorted(dict(m.headers())["error"].decode().split(":")[0] for m in dead)
    truncated = [dict(m.headers()).get("truncated_from") for m in dead]
    expected = sorted(["undecodable TransactionRequest", "transaction_id", "channel"] * 2)
    rows = scored_ids(url, ids)
    fault_report(
        "poison at a partition's head, undecodable, 1 MiB message", sent=N_GOOD + 2 * len(bad),
        scored=len(set(rows)), lost=N_GOOD - len(set(rows)), twice=len(rows) - len(set(rows)),
        note=f"{len(dead)} dead-lettered with their reason",
    )  # fmt: skip
    assert reasons == expected
    assert truncated.count(str(len(bad["transaction_id"])).encode()) == 2  # its head kept
    assert sorted(rows) == sorted(ids)
