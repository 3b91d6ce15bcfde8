"""A day of scored traffic for the review-queue tests (the job, its DAG, the console)."""

from __future__ import annotations

from datetime import date

import numpy as np

from fraudops.review_queue import day_span
from testkit.stack import db_cursor


def band_of(score: float) -> str:
    return "BLOCK" if score >= 0.7 else "CHALLENGE" if score >= 0.4 else "ALLOW"


def seed_day(url: str, day: date, n: int = 200, after: int = 0, prefix: str = "t") -> np.ndarray:
    """`n` scored transactions `<prefix>000`... spread over `day`, and `after` more on the
    day after (ids numbered on); returns every row's score, in id order."""
    scores = np.random.default_rng(5).beta(0.5, 2.0, n + after)
    start, end = day_span(day)
    with db_cursor(url) as cur:
        for i, score in enumerate(scores):
            ts = start + i * (86_400 // max(n, 1)) if i < n else end + i
            cur.execute(
                "INSERT INTO scored_transactions (transaction_id, user_id, event_ts, type,"
                " amount, score, band, model_version, source)"
                " VALUES (%s, %s, %s, 'PAYMENT', 10.0, %s, %s, 'v1', 'stream')",
                (f"{prefix}{i:03d}", i % 17, ts, float(score), band_of(score)),
            )
    return scores
