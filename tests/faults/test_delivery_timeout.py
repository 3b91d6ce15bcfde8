"""Kafka stops acknowledging the scorer's scores mid-flush while its input still flows: on a
3-broker Kafka, transaction_scores asks for 3 in-sync replicas (min.insync.replicas 3, the
input topic 2) and one broker is SIGKILLed. The scorer waits for the acknowledgements no
longer than FRAUDOPS_SCORER_DELIVERY_TIMEOUT_S, commits nothing of those batches and consumes
them again, round after round, until the broker is back; then every transaction is stored
once and on transaction_scores, a score that is there twice (at-least-once) being the same
score (the feature state is idempotent by transaction id). Recovery: from the kill until the
scorer commits offsets again."""

from __future__ import annotations

import collections

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from fraudops.proto_gen.fraud.v1 import fraud_pb2
from testkit.stack import create_topics
from tests.faults.support import log_says, report_stream, stream_through_fault
from tests.helpers.kafka_cluster import KafkaClusterServers
from tests.helpers.serving_env import (
    committed,
    consume,
    service_process,
    serving_v1_settings,
    unique_ids,
    wait_until,
)

pytestmark = pytest.mark.slow

N = 3000
DELIVERY_TIMEOUT_S = 2.0
REWOUND = "consuming again from the last durable offsets"


@pytest.fixture
def kafka(tmp_path):
    servers = KafkaClusterServers(tmp_path / "kafka-cluster").start()
    yield servers
    servers.stop()


def require_every_replica(kafka: KafkaClusterServers, topic: str) -> None:
    """An acks=all write to `topic` needs all 3 replicas in sync: with a broker away, the
    topic takes none (NOT_ENOUGH_REPLICAS) while the others go on."""
    admin = AdminClient(kafka.admin.kafka_config())
    entry = ConfigEntry("min.insync.replicas", "3", incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource("TOPIC", topic, incremental_configs=[entry])
    admin.incremental_alter_configs([resource])[resource].result(timeout=30)


def committed_offsets(settings) -> tuple[int] | None:
    """The scorer group's committed offsets on its input; None while the group's
    coordinator moves (a broker died) or loads."""
    try:
        return (committed(settings, settings.consumer_group, settings.topic_raw),)
    except KafkaException:
        return None


def scores_on_topic(settings, expected: int) -> dict[str, list[tuple[float, int]]]:
    """Each transaction's (score, band) as often as it is on transaction_scores."""
    scores = collections.defaultdict(list)
    for msg in consume(settings, settings.topic_scores, expected):
        response = fraud_pb2.ScoreResponse.FromString(msg.value())
        scores[response.transaction_id].append((response.score, response.band))
    return scores


def test_unacknowledged_scores_are_consumed_again_until_kafka_takes_them(
    kafka, built_models, serving_root, database_url, tmp_path, fault_report
):
    topics = create_topics(kafka.admin, "fault-acks", 3)
    require_every_replica(kafka, topics["topic_scores"])
    settings = serving_v1_settings(
        built_models, serving_root, "fault-acks", **kafka.login(), database_url=database_url,
        scorer_batch_size=200, scorer_delivery_timeout_s=DELIVERY_TIMEOUT_S, **topics,
    )  # fmt: skip
    ids, victim, log = unique_ids("fault-acks", N), kafka.nodes[2], tmp_path / "scorer.log"

    def durable() -> int:  # the offsets the scorer committed: what Kafka acknowledged
        return wait_until(lambda: committed_offsets(settings), "the committed offsets", 60)[0]

    def fault() -> None:
        kafka.kill(victim)
        log_says(log, REWOUND)  # the bounded wait ran out: the scorer does not hang
        kafka.start_node(victim)

    with service_process("serving.scorer", settings, log) as scorer:
        run = stream_through_fault(settings, ids, durable, fault, survivors=[scorer])
        scores = scores_on_topic(settings, len(ids))
    rounds = log.read_text(errors="replace").count(REWOUND)
    repeated = {i: s for i, s in scores.items() if len(s) > 1}
    report_stream(
        fault_report, "Kafka stops acknowledging scores (1 of 3 brokers SIGKILLed, min ISR 3)",
        settings, ids, run,
        f"{rounds} delivery timeouts ({DELIVERY_TIMEOUT_S:g} s), batches consumed again; "
        f"{len(set(ids) - set(scores))} missing from transaction_scores, {len(repeated)} "
        "on it twice (the same score)",
    )  # fmt: skip
    assert rounds >= 1
    assert set(scores) == set(ids), "every score on transaction_scores"
    assert all(len(set(s)) == 1 for s in repeated.values()), "a score consumed again is the same"
