"""Postgres restarted while transactions stream through the scorer: the scorer holds the
batch it cannot make durable (nothing committed), retries, and resumes on its own once the
database is back; every transaction is stored once. The database stays away until the
scorer has given up on its writer's own retries and holds the batch."""

from __future__ import annotations

import time

import pytest

from tests.faults.support import Stream, log_says, resumed, with_stack
from tests.helpers.serving_env import (
    query,
    scored_ids,
    service_process,
    serving_v1_settings,
    unique_ids,
    wait_until,
)

N = 4000


@pytest.fixture
def settings(private_stack, built_models, serving_root, kafka_settings, kafka_topics):
    private_stack.up("postgres")
    base = serving_v1_settings(
        built_models,
        serving_root,
        "fault-pg",
        **kafka_settings.kafka_login(),
        scorer_batch_size=200,
        **kafka_topics(),
    )
    return with_stack(base, private_stack, "postgres")


def test_the_scorer_pauses_while_postgres_restarts_and_loses_nothing(
    settings, private_stack, tmp_path, fault_report
):
    url, ids = settings.database_url, unique_ids("fault-pg", N)

    def stored() -> int:
        return query(url, "SELECT count(*) FROM scored_transactions")[0][0]

    log = tmp_path / "scorer.log"
    with service_process("serving.scorer", settings, log) as scorer:
        stream = Stream(settings, settings.topic_raw, ids).start()
        wait_until(lambda: stored() >= N // 4, "a quarter of the stream stored", 120)
        fault = time.monotonic()
        away = private_stack.restart("postgres", lambda: log_says(log, "database unavailable"))
        resumed(stored, "the scorer to write again after the restart")
        recovery = time.monotonic() - fault
        stream.join()
        wait_until(lambda: stored() >= N, "every transaction stored", 180)
        assert scorer.poll() is None, "the scorer must ride out the restart, not exit"
    rows = scored_ids(url, ids)
    fault_report(
        "Postgres restarted mid-stream (scorer)", sent=N, scored=len(set(rows)),
        lost=N - len(set(rows)), twice=len(rows) - len(set(rows)), recovery_s=recovery,
        note=f"database away {away:.1f} s",
    )  # fmt: skip
    assert sorted(rows) == sorted(ids)
