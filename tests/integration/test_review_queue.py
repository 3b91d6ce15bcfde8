"""The review queue over a real Postgres: a day's unlabelled transactions in, the day's
queue in review_queue out, each item marked exploit / explore-threshold / explore-random."""

from __future__ import annotations

import uuid
from datetime import date

import numpy as np
import pytest

from fraudops.review_queue import (
    EXPLOIT,
    EXPLORE_RANDOM,
    QueuePolicy,
    build_queue,
    day_span,
    read_queue,
)
from serving import db
from serving.labels import record_label

DAY = date(2026, 3, 1)
POLICY = QueuePolicy(daily_budget=20, explore_share=0.25, random_share=0.4, seed=3)


@pytest.fixture
def day_db(database_url):
    """A database of its own holding 200 scored transactions on DAY and 50 the day after."""
    name = f"queue_{uuid.uuid4().hex[:8]}"
    url = db.create_database(database_url, name)
    db.migrate(url)
    conn = db.connect(url)
    scores = np.random.default_rng(5).beta(0.5, 2.0, 250)
    start, end = day_span(DAY)
    with conn, conn.cursor() as cur:
        for i, score in enumerate(scores):
            band = "BLOCK" if score >= 0.7 else "CHALLENGE" if score >= 0.4 else "ALLOW"
            ts = start + i * 400 if i < 200 else end + i
            cur.execute(
                "INSERT INTO scored_transactions (transaction_id, user_id, event_ts, type, amount,"
                " score, band, model_version, source)"
                " VALUES (%s, %s, %s, 'PAYMENT', 10.0, %s, %s, 'v1', 'stream')",
                (f"t{i:03d}", i % 17, ts, float(score), band),
            )
    yield url, conn, scores
    conn.close()
    db.drop_database(database_url, name)


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


def test_rebuilding_a_day_gives_the_same_queue_and_skips_labelled_transactions(day_db):
    url, conn, _ = day_db
    first = build_queue(conn, DAY, POLICY)
    assert build_queue(conn, DAY, POLICY) == first
    top = first[0].transaction_id
    record_label(conn, top, "FRAUD", "analyst:alice")
    again = build_queue(conn, DAY, POLICY)
    assert top not in {q.transaction_id for q in again}
    assert len(again) == 20 and read_queue(conn, DAY) == again
