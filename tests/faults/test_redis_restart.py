"""Redis (the shared per-user feature state) restarted while transactions stream through
the scorer: the scorer holds the batch while Redis is away, retries, and goes on; every
transaction is stored once and counted once in its user's history."""

from __future__ import annotations

import pytest

from tests.faults.support import (
    held,
    histories,
    log_says,
    report_stream,
    stored_count,
    stream_through_fault,
    with_stack,
)
from tests.helpers.serving_env import (
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
    stored = stored_count(url, ids)
    log = tmp_path / "scorer.log"

    def fault() -> float:  # the seconds Redis was away
        return private_stack.restart("redis", lambda: log_says(log, "feature store unavailable"))

    with service_process("serving.scorer", settings, log) as scorer:
        run = stream_through_fault(settings, ids, stored, fault, survivors=[scorer])
    counted = histories(settings.redis_url)
    note = f"Redis away {run.fault:.1f} s; histories hold {held(counted)}"
    report_stream(fault_report, "Redis restarted mid-stream (feature store)", settings, ids, run,
                  note, counted)  # fmt: skip
