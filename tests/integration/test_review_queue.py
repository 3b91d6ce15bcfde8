"""The review-queue job over a real Postgres: a day's unlabelled transactions in, the day's
queue in review_queue out, each item marked exploit / explore-threshold / explore-random;
rebuilding keeps what analysts worked, and a label given from the queue keeps its reason."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date

import pytest

from fraudops import db
from fraudops.review_queue import EXPLOIT, EXPLORE_RANDOM, QueuePolicy, read_queue
from jobs.review_queue import build_queue
from serving.labels import LabelError, record_label
from testkit.stack import fresh_database
from tests.helpers.queue_day import seed_day
from tests.helpers.serving_env import query

DAY = date(2026, 3, 1)
POLICY = QueuePolicy(daily_budget=20, explore_share=0.25, random_share=0.4, seed=3)


@pytest.fixture
def day_db(postgres_server_url):
    """A database of its own holding 200 scored transactions on DAY and 50 the day after."""
    with fresh_database(postgres_server_url, "queue") as url:
        scores = seed_day(url, DAY, 200, after=50)
        conn = db.connect(url)
        yield url, conn, scores
        conn.close()


def test_the_days_queue_is_stored_with_its_reasons(day_db):
    url, conn, scores = day_db
    items = build_queue(conn, DAY, POLICY)
    assert read_queue(conn, DAY) == items
    assert len(items) == 20
    assert {q.reason for q in items} == {EXPLOIT, "explore-threshold", EXPLORE_RANDOM}
    assert all(int(q.transaction_id[1:]) < 200 for q in items)  # the day's own transactions
    exploit = [q for q in items if q.reason == EXPLOIT]
    best = sorted(range(200), key=lambda i: -scores[i])[: len(exploit)]
    assert {q.transaction_id for q in exploit} == {f"t{i:03d}" for i in best}


def test_rebuilding_keeps_worked_items_and_refills_the_rest(day_db):
    url, conn, _ = day_db
    first = build_queue(conn, DAY, POLICY)
    assert build_queue(conn, DAY, POLICY) == first
    top = first[0]
    sampled = next(q for q in first if q.reason == EXPLORE_RANDOM)
    record_label(conn, top.transaction_id, "FRAUD", "analyst:alice", queue_date=DAY)
    record_label(conn, sampled.transaction_id, "LEGIT", "analyst:alice", queue_date=DAY)
    again = build_queue(conn, DAY, POLICY)
    assert len(again) == 20 and read_queue(conn, DAY) == again
    kept = {q.transaction_id: q.reason for q in again}
    assert kept[top.transaction_id] == EXPLOIT and kept[sampled.transaction_id] == EXPLORE_RANDOM
    assert sum(r == EXPLORE_RANDOM for r in kept.values()) == 2  # the sample is not redrawn
    stored = query(url, "SELECT transaction_id, label, queue_reason FROM feedback_labels"
                   " ORDER BY label")  # fmt: skip
    assert stored == [(top.transaction_id, "FRAUD", EXPLOIT),
                      (sampled.transaction_id, "LEGIT", EXPLORE_RANDOM)]  # fmt: skip
    audit = query(url, "SELECT detail->>'queue_reason' FROM audit_log WHERE subject = %s",
                  (sampled.transaction_id,))  # fmt: skip
    assert audit == [(EXPLORE_RANDOM,)]


def test_a_label_for_an_item_not_in_that_days_queue_names_the_field(day_db):
    url, conn, _ = day_db
    build_queue(conn, DAY, POLICY)
    outside = "t249"  # the day after's
    with pytest.raises(LabelError, match="queue_date") as err:
        record_label(conn, outside, "FRAUD", "analyst:alice", queue_date=DAY)
    assert err.value.field == "queue_date"
    assert query(url, "SELECT 1 FROM feedback_labels") == []
    record_label(conn, outside, "FRAUD", "analyst:alice")  # from the flagged list: no reason
    assert query(url, "SELECT queue_reason FROM feedback_labels") == [(None,)]


def test_the_cli_builds_the_given_days_with_params_yaml(day_db, project_root, tmp_path):
    url, conn, _ = day_db
    params = tmp_path / "params.yaml"
    params.write_text("queue:\n  daily_budget: 7\n  explore_share: 0.3\n  random_share: 0.5\n"
                      "  seed: 1\n  schedule: '@hourly'\n")  # fmt: skip
    command = [sys.executable, "-m", "jobs.review_queue", "--date", DAY.isoformat(),
               "--date", "2026-03-02", "--params", str(params)]  # fmt: skip
    env = {**os.environ, "DATABASE_URL": url}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120,
                            cwd=project_root)  # fmt: skip
    assert result.returncode == 0, result.stderr
    counts = query(url, "SELECT queue_date, count(*) FROM review_queue GROUP BY 1 ORDER BY 1")
    assert counts == [(DAY, 7), (date(2026, 3, 2), 7)]
