"""Redis (the shared per-user feature state) restarted while transactions stream through
the scorer: the scorer holds the batch while Redis is away, retries, and goes on; every
transaction is stored once and counted once in its user's history."""

from __future__ import annotations

import time

import pytest

from serving.feature_state import RedisFeatures
from tests.faults.support import USERS, Stream, log_says, resumed, with_stack
from tests.helpers.serving_env import (
    scored_ids,
    service_process,
    serving_v1_settings,
    unique_ids,
    wait_until,
)

N = 4000


@pytest.fixture
def settings(private_stack, built_models, serving_root, kafka_settings, kafka_topics,
             database_url):  # fmt: skip
    private_stack.up("redis")
    base = serving_v1_settings(
        built_models,
        serving_root,
        "fault-redis",
        **kafka_settings.kafka_login(),
        database_url=database_url,
        scorer_batch_size=200,
        **kafka_topics(),
    )
    return with_stack(base, private_stack, "redis")


def test_the_scorer_holds_while_redis_restarts_and_counts_each_transaction_once(
    settings, private_stack, tmp_path, fault_report
):
    url, ids = settings.database_url, unique_ids("fault-redis", N)

    def stored() -> int:
        return len(scored_ids(url, ids))

    log = tmp_path / "scorer.log"
    with service_process("serving.scorer", settings, log) as scorer:
        stream = Stream(settings, settings.topic_raw, ids).start()
        wait_until(lambda: stored() >= N // 4, "a quarter of the stream stored", 120)
        fault = time.monotonic()
        away = private_stack.restart("redis", lambda: log_says(log, "feature store unavailable"))
        resumed(stored, "the scorer to write again after the restart")
        recovery = time.monotonic() - fault
        stream.join()
        wait_until(lambda: stored() >= N, "every transaction stored", 180)
        assert scorer.poll() is None, "the scorer must ride out the restart, not exit"
    rows = scored_ids(url, ids)
    features = RedisFeatures.from_url(settings.redis_url, timeout=10)
    counted = [h[0] for user in range(1, USERS + 1) for h in features.history(user)]
    fault_report(
        "Redis restarted mid-stream (feature store)", sent=N, scored=len(set(rows)),
        lost=N - len(set(rows)), twice=len(rows) - len(set(rows)), recovery_s=recovery,
        note=f"Redis away {away:.1f} s; history holds {len(counted)} events, "
        f"{len(counted) - len(set(counted))} twice",
    )  # fmt: skip
    assert sorted(rows) == sorted(ids)
    assert sorted(counted) == sorted(ids)
