"""Past one machine (DESIGN section 6, "at scale"): the per-user state on a real Redis
Cluster (3 masters, 3 replicas) and scorer replicas in one consumer group, with a node
killed mid-stream. A Redis master SIGKILLed: its replica is promoted, the scorer holds its
batch while the slot is away and goes on, every transaction is stored once and counted once
in its user's history, and inline answers for that slot meanwhile say they had no history.
Three scorers over 12 partitions, one SIGKILLed: the others take its partitions and every
transaction is scored once. A broker of a 3-broker Kafka (replication factor 3, min ISR 2)
SIGKILLed mid-stream and started again: scoring goes on without it, nothing lost, nothing
stored twice. Each fault comes while transactions are still to come (stream_through_fault)."""

from __future__ import annotations

import signal
import time

import pytest

from serving.feature_state import RedisFeatures
from serving.model_store import ModelStore
from serving.scoring import NO_HISTORY_REASON, ScoringCore, decode
from testkit.redis_cluster import RedisClusterServers
from testkit.stack import create_topics, wait_for_members
from tests.faults.support import held, histories, report_stream, stored_count, stream_through_fault
from tests.helpers.kafka_cluster import KafkaClusterServers
from tests.helpers.serving_env import (
    service_process,
    serving_v1_settings,
    stop_process,
    transaction,
    unique_ids,
)

pytestmark = pytest.mark.slow

N = 3000


@pytest.fixture
def cluster(tmp_path):
    servers = RedisClusterServers(tmp_path / "redis-cluster").start()
    yield servers
    servers.stop()


@pytest.fixture
def cluster_settings(cluster, v1_settings, database_url):
    """Factory `cluster_settings(group, partitions)`: scorer settings on the Redis Cluster."""

    def make(group: str, partitions: int):
        return v1_settings(group, partitions, database_url=database_url, redis_url=cluster.url,
                           raw_partitions=partitions, scorer_batch_size=200)  # fmt: skip

    return make


def inline_while_away(serving_root, url: str, user: int, deadline: float) -> list[list[str]]:
    """Inline answers for `user` (whose slot's master was just killed) until one has its
    history again or `deadline`: the reasons of each."""
    store = ModelStore(serving_root, prewarm=1)
    store.load_latest()
    core = ScoringCore(store, RedisFeatures.from_url(url, timeout=0.25), without_history_ok=True)
    answers: list[list[str]] = []
    n = 0
    while time.monotonic() < deadline:
        n += 1
        tx = decode(transaction(n, user_id=user, transaction_id=f"inline-{user}-{time.time_ns()}"))
        reasons = core.score([tx]).reasons[0]
        answers.append(reasons)
        if NO_HISTORY_REASON not in reasons:
            break
        time.sleep(0.05)
    return answers


def test_a_redis_master_killed_mid_stream_loses_and_repeats_nothing(
    cluster, cluster_settings, serving_root, tmp_path, fault_report
):
    settings = cluster_settings("fault-cluster", 3)
    url, ids = settings.database_url, unique_ids("fault-cluster", N)
    key = RedisFeatures.from_url(cluster.url, partitions=3).key_of(1)  # its master is killed
    stored = stored_count(url, ids)

    def fault() -> tuple[list[list[str]], object, float]:
        """Kill the master of user 1's slot; inline answers until it has a master again."""
        victim, killed = cluster.master_of(key), time.monotonic()
        victim.kill()
        answers = inline_while_away(serving_root, settings.redis_url, 1, killed + 60)
        promoted = cluster.wait_for_master(key, victim)
        return answers, promoted, time.monotonic() - killed

    with service_process("serving.scorer", settings, tmp_path / "scorer.log") as scorer:
        run = stream_through_fault(settings, ids, stored, fault, survivors=[scorer])
    answers, promoted, away = run.fault
    counted = [i for i in histories(settings.redis_url, 3) if not i.startswith("inline-")]
    report_stream(
        fault_report, "Redis Cluster master SIGKILLed mid-stream", settings, ids, run,
        f"slot away {away:.1f} s (replica {promoted.port} promoted); "
        f"{sum(NO_HISTORY_REASON in r for r in answers)} inline answers marked meanwhile",
        counted,
    )  # fmt: skip
    assert NO_HISTORY_REASON in answers[0], "an answer while the slot is away is marked"
    assert NO_HISTORY_REASON not in answers[-1], "answers have history again once promoted"


def kill(process) -> float:
    """SIGKILL a scorer; when."""
    stop_process(process, signal.SIGKILL)
    return time.monotonic()


def test_three_scorers_over_12_partitions_one_killed_score_everything_once(
    cluster_settings, tmp_path, fault_report
):
    settings = cluster_settings("fault-replicas", 12)
    url, ids = settings.database_url, unique_ids("fault-replicas", N)
    stored = stored_count(url, ids)

    logs = [tmp_path / f"scorer-{n}.log" for n in range(3)]
    with (
        service_process("serving.scorer", settings, logs[0]) as first,
        service_process("serving.scorer", settings, logs[1]) as second,
        service_process("serving.scorer", settings, logs[2]) as third,
    ):
        # All three hold partitions before one dies: one killed while it still starts
        # would leave nothing to take over.
        wait_for_members(settings, settings.consumer_group, 3)
        run = stream_through_fault(settings, ids, stored, lambda: kill(second),
                                   survivors=[first, third])  # fmt: skip
        everything = time.monotonic() - run.fault
    counted = histories(settings.redis_url, 12)
    report_stream(
        fault_report, "1 of 3 scorers SIGKILLed (12 partitions, Redis Cluster)", settings, ids,
        run, f"everything stored {everything:.1f} s after the kill; histories hold "
        f"{held(counted)}", counted,
    )  # fmt: skip


def test_a_kafka_broker_killed_mid_stream_and_restarted_loses_and_repeats_nothing(
    built_models, serving_root, database_url, tmp_path, fault_report
):
    kafka = KafkaClusterServers(tmp_path / "kafka-cluster").start()
    try:
        topics = create_topics(kafka.admin, "fault-broker", 3)
        settings = serving_v1_settings(
            built_models, serving_root, "fault-broker", **kafka.login(),
            database_url=database_url, scorer_batch_size=200, **topics,
        )  # fmt: skip
        url, ids = settings.database_url, unique_ids("fault-broker", N)
        stored = stored_count(url, ids)

        victim = kafka.nodes[2]
        with service_process("serving.scorer", settings, tmp_path / "scorer.log") as scorer:
            run = stream_through_fault(settings, ids, stored, lambda: kafka.kill(victim),
                                       repair=lambda: kafka.start_node(victim),
                                       survivors=[scorer])  # fmt: skip
    finally:
        kafka.stop()
    report_stream(fault_report, "Kafka broker (1 of 3, RF 3, min ISR 2) SIGKILLed, restarted",
                  settings, ids, run,
                  f"{run.stored_at_resume} stored when scoring resumed without it")  # fmt: skip
