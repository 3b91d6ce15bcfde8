"""The scheduled job that builds the analysts' review queue (policy: fraudops.review_queue).

Each run rebuilds the queue of today and of yesterday (UTC, by when the payments happened):
scores keep arriving through the day and late ones still join the day before. A rebuild
keeps every item an analyst has worked (labelled, or claimed and open on a screen), with
its reason, and spends the rest of the budget k on the day's unlabelled transactions, so
the queue fills as traffic comes in without pulling an item from under an analyst. The
`fraud_review_queue` DAG runs it as often as `queue.schedule` says; the loop benchmark
calls `build_queue` as production does.

    python -m jobs.review_queue [--date YYYY-MM-DD ...] [--params params.yaml]
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from fraudops.db import connect
from fraudops.params import DEFAULT_PARAMS, load_params
from fraudops.review_queue import QueueItem, QueuePolicy, day_span, select_queue
from fraudops.settings import settings_with_database

log = logging.getLogger("fraudops.review_queue")

_LOCK_DAY = "SELECT 1 FROM review_queue WHERE queue_date = %s FOR UPDATE"
_WORKED = """
SELECT q.transaction_id, q.position, q.reason, q.score, q.band, q.model_version
  FROM review_queue q
 WHERE q.queue_date = %(day)s
   AND (EXISTS (SELECT 1 FROM feedback_labels f WHERE f.transaction_id = q.transaction_id)
        OR EXISTS (SELECT 1 FROM console_claims c
                    WHERE c.transaction_id = q.transaction_id AND c.expires_at > now()))
"""
_CANDIDATES = """
SELECT s.transaction_id, s.score, s.band, s.model_version
  FROM scored_transactions s
 WHERE s.event_ts >= %(start)s AND s.event_ts < %(end)s
   AND NOT EXISTS (SELECT 1 FROM feedback_labels f WHERE f.transaction_id = s.transaction_id)
"""
_DROP = "DELETE FROM review_queue WHERE queue_date = %s AND NOT (transaction_id = ANY(%s))"
_UPSERT = """
INSERT INTO review_queue (queue_date, transaction_id, position, reason, score, band, model_version)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (queue_date, transaction_id) DO UPDATE
   SET position = EXCLUDED.position, reason = EXCLUDED.reason, score = EXCLUDED.score,
       band = EXCLUDED.band, model_version = EXCLUDED.model_version
"""


def _fetch(cur, query: str, args: Any) -> list[dict[str, Any]]:
    cur.execute(query, args)
    columns = [c.name for c in cur.description]
    return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]


def build_queue(conn, day: date, policy: QueuePolicy) -> list[QueueItem]:
    """Rebuild the queue of `day` in one transaction and return it in review order.

    The day's rows are locked first: a label being recorded from the queue holds a share
    lock on its row, so the worked items are read only once such labels have committed."""
    start, end = day_span(day)
    with conn, conn.cursor() as cur:
        cur.execute(_LOCK_DAY, (day,))
        kept = [QueueItem(**row) for row in _fetch(cur, _WORKED, {"day": day})]
        rows = _fetch(cur, _CANDIDATES, {"start": start, "end": end})
        items = select_queue(rows, policy, day, kept)
        cur.execute(_DROP, (day, [q.transaction_id for q in items]))
        cur.executemany(
            _UPSERT,
            [
                (day, q.transaction_id, q.position, q.reason, q.score, q.band, q.model_version)
                for q in items
            ],
        )
    return items


def days_to_build(now: datetime) -> list[date]:
    """Yesterday and today (UTC) of `now`, the days whose queue a run rebuilds."""
    today = now.astimezone(UTC).date()
    return [today - timedelta(days=1), today]


def run_queue(database_url: str, days: list[date], params: dict[str, Any]) -> dict[str, Any]:
    """Build the queue of each day with params.yaml's `queue` policy; the DAG and the CLI
    both call this. Returns, per day, the items per reason (the task's XCom)."""
    policy = QueuePolicy.from_params(params)
    conn = connect(database_url)
    built = {}
    try:
        for day in days:
            items = build_queue(conn, day, policy)
            built[day.isoformat()] = dict(Counter(q.reason for q in items))
            log.info("review queue of %s: %d items %s", day, len(items), built[day.isoformat()])
    finally:
        conn.close()
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the analysts' review queue.")
    parser.add_argument(
        "--date",
        type=date.fromisoformat,
        action="append",
        help="YYYY-MM-DD (UTC), repeatable; default: yesterday and today",
    )
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    args = parser.parse_args(argv)
    settings = settings_with_database("there is no queue to build")
    if settings is None:
        return 2
    days = args.date or days_to_build(datetime.now(UTC))
    run_queue(settings.database_url, days, load_params(args.params, "queue"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
