"""Postgres restarted while transactions stream through the scorer: the scorer holds the
batch it cannot make durable (nothing committed), retries, and resumes on its own once the
database is back; every transaction is stored once. The restart comes while transactions
are still to come, and the database stays away until the scorer has given up on its
writer's own retries and holds the batch."""

from __future__ import annotations

import pytest

from tests.faults.support import log_says, report_stream, stream_through_fault, with_stack
from tests.helpers.serving_env import (
    query,
    service_process,
    unique_ids,
)

N = 4000


@pytest.fixture
def settings(private_stack, v1_settings):
    private_stack.up("postgres")
    return with_stack(v1_settings("fault-pg", scorer_batch_size=200), private_stack, "postgres")


def test_the_scorer_pauses_while_postgres_restarts_and_loses_nothing(
    settings, private_stack, tmp_path, fault_report
):
    url, ids = settings.database_url, unique_ids("fault-pg", N)

    def stored() -> int:
        return query(url, "SELECT count(*) FROM scored_transactions")[0][0]

    log = tmp_path / "scorer.log"

    def fault() -> float:  # the seconds the database was away
        return private_stack.restart("postgres", lambda: log_says(log, "database unavailable"))

    with service_process("serving.scorer", settings, log) as scorer:
        run = stream_through_fault(settings, ids, stored, fault, survivors=[scorer])
    report_stream(fault_report, "Postgres restarted mid-stream (scorer)", settings, ids, run,
                  f"database away {run.fault:.1f} s")  # fmt: skip
