"""Redis (the shared per-user feature state) restarted while transactions stream through
the scorer: the scorer holds the batch while Redis is away, retries, and goes on; every
transaction is stored once and counted once in its user's history."""

from __future__ import annotations

import pytest

from serving.feature_state import RedisFeatures
from tests.faults.support import USERS, log_says, stream_through_fault, tally, with_stack
from tests.helpers.serving_env import (
    scored_ids,
    service_process,
    unique_ids,
)

N = 4000


@pytest.fixture
def settings(private_stack, v1_settings, database_url):
    private_stack.up("redis")
    base = v1_settings("fault-redis", database_url=database_url, scorer_batch_size=200)
    return with_stack(base, private_stack, "redis")


def test_the_scorer_holds_while_redis_restarts_and_counts_each_transaction_once(
    settings, private_stack, tmp_path, fault_report
):
    url, ids = settings.database_url, unique_ids("fault-redis", N)

    def stored() -> int:
        return len(scored_ids(url, ids))

    log = tmp_path / "scorer.log"

    def fault() -> float:  # the seconds Redis was away
        return private_stack.restart("redis", lambda: log_says(log, "feature store unavailable"))

    with service_process("serving.scorer", settings, log) as scorer:
        run = stream_through_fault(settings, ids, stored, fault, survivors=[scorer])
    rows = scored_ids(url, ids)
    features = RedisFeatures.from_url(settings.redis_url, timeout=10)
    counted = [h[0] for user in range(1, USERS + 1) for h in features.history(user)]
    fault_report(
        "Redis restarted mid-stream (feature store)", **tally(ids, rows),
        recovery_s=run.recovery_s,
        note=f"Redis away {run.fault:.1f} s; history holds {len(counted)} events, "
        f"{len(counted) - len(set(counted))} twice",
    )  # fmt: skip
    assert sorted(rows) == sorted(ids)
    assert sorted(counted) == sorted(ids)
