"""The review queue: which k of a day's scored transactions the investigators check.

Checking only the highest scores (exploitation) teaches the next model nothing about what
the current one misses: its labels are a sample of its own alerts. So a share of the
budget explores (`explore_share` of k):
- explore-threshold: the transactions scored nearest a band threshold, where one more
  label moves the line the most;
- explore-random: a uniform sample of ALLOW (`random_share` of the exploration), the only
  unbiased estimate of the fraud that gets through.
The rest is exploit: the highest scores. Every item says which of the three it is.

`select_queue` is the policy on plain rows (deterministic for the seed and the day);
`build_queue` runs it over a day of Postgres `scored_transactions` not yet labelled and
writes the day's `review_queue` rows (re-building a day replaces them); `read_queue` is
what the analyst console lists. Parameters: params.yaml `queue`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np

EXPLOIT, EXPLORE_THRESHOLD, EXPLORE_RANDOM = "exploit", "explore-threshold", "explore-random"
REASONS: tuple[str, ...] = (EXPLOIT, EXPLORE_THRESHOLD, EXPLORE_RANDOM)
ALLOW = "ALLOW"


@dataclass(frozen=True)
class QueuePolicy:
    """The daily budget k and how it is split (params.yaml `queue`)."""

    daily_budget: int
    explore_share: float
    random_share: float
    seed: int

    def __post_init__(self) -> None:
        if self.daily_budget < 0:
            raise ValueError(f"queue.daily_budget must be >= 0, got {self.daily_budget}")
        for name in ("explore_share", "random_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"queue.{name} must be in [0, 1], got {getattr(self, name)}")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> QueuePolicy:
        return cls(
            int(params["daily_budget"]),
            float(params["explore_share"]),
            float(params["random_share"]),
            int(params["seed"]),
        )

    def sizes(self) -> dict[str, int]:
        """Items per reason; they add up to k."""
        explore = round(self.daily_budget * self.explore_share)
        random = round(explore * self.random_share)
        return {
            EXPLOIT: self.daily_budget - explore,
            EXPLORE_THRESHOLD: explore - random,
            EXPLORE_RANDOM: random,
        }


@dataclass(frozen=True)
class QueueItem:
    transaction_id: str
    position: int
    reason: str
    score: float
    band: str
    model_version: str


def band_edges(scores: np.ndarray, bands: np.ndarray, versions: np.ndarray) -> np.ndarray:
    """Per row, the distance of its score to the nearest band threshold of the model
    version that scored it. A version's thresholds are read off its own rows: a band
    starts at its lowest score (bands are `score >= threshold`)."""
    distance = np.full(len(scores), np.inf)
    for version in np.unique(versions):
        mine = versions == version
        for lower in (("CHALLENGE", "BLOCK"), ("BLOCK",)):
            above = mine & np.isin(bands, lower)
            if above.any():
                edge = scores[above].min()
                distance[mine] = np.minimum(distance[mine], np.abs(scores[mine] - edge))
    return distance


def select_queue(rows: list[dict[str, Any]], policy: QueuePolicy, day: date) -> list[QueueItem]:
    """The day's queue from its candidate rows (transaction_id, score, band, model_version).

    Exploit first, then the threshold and the random exploration; a pool with too few
    rows leaves its budget to the next highest scores, so the queue is full whenever there
    are k rows. Ties break on transaction_id, and the random sample is drawn from
    (seed, day) over rows in id order: the same rows give the same queue."""
    rows = sorted(rows, key=lambda r: r["transaction_id"])
    scores = np.array([float(r["score"]) for r in rows])
    bands = np.array([r["band"] for r in rows], dtype=object)
    versions = np.array([r["model_version"] for r in rows], dtype=object)
    by_risk = sorted(range(len(rows)), key=lambda i: (-scores[i], rows[i]["transaction_id"]))
    sizes, taken = policy.sizes(), {}
    for i in by_risk[: sizes[EXPLOIT]]:
        taken[i] = EXPLOIT
    distance = band_edges(scores, bands, versions)
    near = sorted((i for i in range(len(rows)) if i not in taken), key=lambda i: distance[i])
    for i in near[: sizes[EXPLORE_THRESHOLD]]:
        taken[i] = EXPLORE_THRESHOLD
    allowed = [i for i in range(len(rows)) if i not in taken and bands[i] == ALLOW]
    rng = np.random.default_rng([policy.seed, day.toordinal()])
    count = min(sizes[EXPLORE_RANDOM], len(allowed))
    for i in rng.choice(allowed, size=count, replace=False) if count else []:
        taken[int(i)] = EXPLORE_RANDOM
    for i in (i for i in by_risk if i not in taken):
        if len(taken) >= policy.daily_budget:
            break
        taken[i] = EXPLOIT
    order = sorted(
        taken, key=lambda i: (REASONS.index(taken[i]), -scores[i], rows[i]["transaction_id"])
    )
    return [
        QueueItem(rows[i]["transaction_id"], n, taken[i], float(scores[i]), bands[i], versions[i])
        for n, i in enumerate(order, start=1)
    ]


def day_span(day: date) -> tuple[int, int]:
    """The day's [start, end) in Unix seconds (transactions are queued by when they happened)."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return int(start.timestamp()), int((start + timedelta(days=1)).timestamp())


_CANDIDATES = """
SELECT s.transaction_id, s.score, s.band, s.model_version
  FROM scored_transactions s
 WHERE s.event_ts >= %s AND s.event_ts < %s
   AND NOT EXISTS (SELECT 1 FROM feedback_labels f WHERE f.transaction_id = s.transaction_id)
"""
_INSERT = """
INSERT INTO review_queue (queue_date, transaction_id, position, reason, score, band, model_version)
VALUES (%s, %s, %s, %s, %s, %s, %s)
"""


def build_queue(conn, day: date, policy: QueuePolicy) -> list[QueueItem]:
    """Select the day's queue among its unlabelled scored transactions and store it in
    review_queue, replacing an earlier queue of the same day, in one transaction."""
    with conn, conn.cursor() as cur:
        cur.execute(_CANDIDATES, day_span(day))
        columns = [c.name for c in cur.description]
        rows = [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
        items = select_queue(rows, policy, day)
        cur.execute("DELETE FROM review_queue WHERE queue_date = %s", (day,))
        cur.executemany(
            _INSERT,
            [
                (day, q.transaction_id, q.position, q.reason, q.score, q.band, q.model_version)
                for q in items
            ],
        )
    return items


def read_queue(conn, day: date) -> list[QueueItem]:
    """The stored queue of a day, in review order."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT transaction_id, position, reason, score, band, model_version"
            " FROM review_queue WHERE queue_date = %s ORDER BY position",
            (day,),
        )
        return [QueueItem(*row) for row in cur.fetchall()]
