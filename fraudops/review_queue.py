"""The review queue: which k of a day's scored transactions the investigators check.

Checking only the highest scores (exploitation) teaches the next model nothing about what
the current one misses: its labels are a sample of its own alerts. So a share of the
budget explores (`explore_share` of k):
- explore-threshold: the transactions scored nearest a band threshold, where one more
  label moves the line the most;
- explore-random: a uniform sample of ALLOW (`random_share` of the exploration), the only
  unbiased estimate of the fraud that gets through.
The rest is exploit: the highest scores. Every item says which of the three it is.

`select_queue` is the policy on plain rows (deterministic for the seed and the day); the
scheduled job `jobs.review_queue` runs it over a day of Postgres `scored_transactions` and
stores the day's `review_queue` rows, which the analyst console lists. A label given from
the queue is stored with its item's reason (`queued_reason`), so each reason's precision
is measured. Parameters: params.yaml `queue`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
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


def remaining(policy: QueuePolicy, kept: Sequence[QueueItem]) -> tuple[dict[str, int], int]:
    """What is left of each reason's share, and of k, once `kept` items are counted."""
    held = Counter(q.reason for q in kept)
    sizes = {reason: max(0, n - held[reason]) for reason, n in policy.sizes().items()}
    budget = max(0, policy.daily_budget - len(kept))
    excess = sum(sizes.values()) - budget  # a reason held beyond its share
    for reason in REASONS:
        cut = min(max(excess, 0), sizes[reason])
        sizes[reason], excess = sizes[reason] - cut, excess - cut
    return sizes, budget


def _pick(rows: list[dict[str, Any]], sizes: dict[str, int], budget: int, rng) -> dict[int, str]:
    """Row index -> reason: exploit, then the threshold and the random exploration, then
    whatever budget is left to the next highest scores."""
    scores = np.array([float(r["score"]) for r in rows])
    bands = np.array([r["band"] for r in rows], dtype=object)
    versions = np.array([r["model_version"] for r in rows], dtype=object)
    by_risk = sorted(range(len(rows)), key=lambda i: (-scores[i], rows[i]["transaction_id"]))
    taken = dict.fromkeys(by_risk[: sizes[EXPLOIT]], EXPLOIT)
    distance = band_edges(scores, bands, versions)
    near = sorted((i for i in range(len(rows)) if i not in taken), key=lambda i: distance[i])
    taken |= dict.fromkeys(near[: sizes[EXPLORE_THRESHOLD]], EXPLORE_THRESHOLD)
    allowed = [i for i in range(len(rows)) if i not in taken and bands[i] == ALLOW]
    count = min(sizes[EXPLORE_RANDOM], len(allowed))
    for i in rng.choice(allowed, size=count, replace=False) if count else []:
        taken[int(i)] = EXPLORE_RANDOM
    for i in (i for i in by_risk if i not in taken):
        if len(taken) >= budget:
            break
        taken[i] = EXPLOIT
    return taken


def select_queue(
    rows: list[dict[str, Any]], policy: QueuePolicy, day: date, kept: Sequence[QueueItem] = ()
) -> list[QueueItem]:
    """The day's queue from its candidate rows (transaction_id, score, band, model_version).

    `kept` are items already worked (labelled, or claimed by an analyst): they stay, with
    their reason, and spend their part of the budget. A pool with too few rows leaves its
    budget to the next highest scores, so the queue is full whenever there are k rows.
    Ties break on transaction_id, and the random sample is drawn from (seed, day) over
    rows in id order: the same rows give the same queue."""
    held = {q.transaction_id for q in kept}
    rows = sorted((r for r in rows if r["transaction_id"] not in held),
                  key=lambda r: r["transaction_id"])  # fmt: skip
    sizes, budget = remaining(policy, kept)
    taken = _pick(rows, sizes, budget, np.random.default_rng([policy.seed, day.toordinal()]))
    new = [
        QueueItem(rows[i]["transaction_id"], 0, reason, float(rows[i]["score"]),
                  rows[i]["band"], rows[i]["model_version"])
        for i, reason in taken.items()
    ]  # fmt: skip
    return in_review_order([*kept, *new])


def in_review_order(items: Sequence[QueueItem]) -> list[QueueItem]:
    """Exploit first, then the threshold and the random exploration, each by score;
    positions numbered 1..n in that order."""
    order = sorted(items, key=lambda q: (REASONS.index(q.reason), -q.score, q.transaction_id))
    return [replace(q, position=n) for n, q in enumerate(order, start=1)]


def day_span(day: date) -> tuple[int, int]:
    """The day's [start, end) in Unix seconds (transactions are queued by when they happened)."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return int(start.timestamp()), int((start + timedelta(days=1)).timestamp())


def read_queue(conn, day: date) -> list[QueueItem]:
    """The stored queue of a day, in review order."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT transaction_id, position, reason, score, band, model_version"
            " FROM review_queue WHERE queue_date = %s ORDER BY position",
            (day,),
        )
        return [QueueItem(*row) for row in cur.fetchall()]


def queued_reason(cur, day: date, transaction_id: str) -> str | None:
    """The reason `transaction_id` is in the queue of `day` (None: it is not), read with a
    share lock so a rebuild of the day waits for the label being recorded with it."""
    cur.execute(
        "SELECT reason FROM review_queue WHERE queue_date = %s AND transaction_id = %s FOR SHARE",
        (day, transaction_id),
    )
    row = cur.fetchone()
    return row[0] if row else None
