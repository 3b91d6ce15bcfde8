"""The review-queue policy on plain rows: the split of k, each item's reason, determinism."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pytest

from fraudops.review_queue import (
    EXPLOIT,
    EXPLORE_RANDOM,
    EXPLORE_THRESHOLD,
    QueueItem,
    QueuePolicy,
    select_queue,
)

DAY = date(2026, 3, 1)
CHALLENGE_AT, BLOCK_AT = 0.4, 0.7


def day_rows(n: int = 400, seed: int = 0) -> list[dict]:
    scores = np.random.default_rng(seed).beta(0.5, 2.0, n)
    bands = np.where(
        scores >= BLOCK_AT, "BLOCK", np.where(scores >= CHALLENGE_AT, "CHALLENGE", "ALLOW")
    )
    return [
        {"transaction_id": f"t{i:04d}", "score": float(s), "band": str(b), "model_version": "v1"}
        for i, (s, b) in enumerate(zip(scores, bands, strict=True))
    ]


def by_reason(items) -> dict[str, list]:
    return {
        r: [q for q in items if q.reason == r] for r in (EXPLOIT, EXPLORE_THRESHOLD, EXPLORE_RANDOM)
    }


def test_budget_is_split_between_exploitation_and_exploration():
    policy = QueuePolicy(daily_budget=50, explore_share=0.2, random_share=0.5, seed=1)
    assert policy.sizes() == {EXPLOIT: 40, EXPLORE_THRESHOLD: 5, EXPLORE_RANDOM: 5}
    rows = day_rows()
    items = select_queue(rows, policy, DAY)
    assert len(items) == 50 and len({q.transaction_id for q in items}) == 50
    assert [q.position for q in items] == list(range(1, 51))
    parts = by_reason(items)
    assert {r: len(v) for r, v in parts.items()} == policy.sizes()
    top = sorted(rows, key=lambda r: -r["score"])[:40]
    assert {q.transaction_id for q in parts[EXPLOIT]} == {r["transaction_id"] for r in top}
    assert all(q.band == "ALLOW" for q in parts[EXPLORE_RANDOM])


def test_threshold_exploration_takes_the_scores_nearest_a_band_edge():
    policy = QueuePolicy(daily_budget=20, explore_share=0.5, random_share=0.0, seed=1)
    rows = day_rows()
    items = by_reason(select_queue(rows, policy, DAY))[EXPLORE_THRESHOLD]
    exploit = {q.transaction_id for q in by_reason(select_queue(rows, policy, DAY))[EXPLOIT]}
    challenge_edge = min(r["score"] for r in rows if r["band"] != "ALLOW")
    block_edge = min(r["score"] for r in rows if r["band"] == "BLOCK")

    def distance(score: float) -> float:
        return min(abs(score - challenge_edge), abs(score - block_edge))

    rest = sorted(distance(r["score"]) for r in rows if r["transaction_id"] not in exploit)
    assert sorted(distance(q.score) for q in items) == rest[:10]


def test_the_same_rows_seed_and_day_give_the_same_queue_in_any_order():
    policy = QueuePolicy(daily_budget=30, explore_share=0.3, random_share=0.5, seed=7)
    rows = day_rows()
    first = select_queue(rows, policy, DAY)
    assert select_queue(list(reversed(rows)), policy, DAY) == first
    other_day = select_queue(rows, policy, date(2026, 3, 2))
    assert by_reason(other_day)[EXPLORE_RANDOM] != by_reason(first)[EXPLORE_RANDOM]
    assert by_reason(other_day)[EXPLOIT] == by_reason(first)[EXPLOIT]


def test_a_short_pool_leaves_its_budget_to_the_highest_scores():
    rows = [r | {"band": "BLOCK"} for r in day_rows(30)]  # nothing in ALLOW to sample
    policy = QueuePolicy(daily_budget=10, explore_share=0.5, random_share=1.0, seed=1)
    items = select_queue(rows, policy, DAY)
    assert len(items) == 10 and {q.reason for q in items} == {EXPLOIT}
    assert len(select_queue(rows[:4], policy, DAY)) == 4


@pytest.mark.parametrize(
    "params",
    [
        {"daily_budget": -1, "explore_share": 0.2, "random_share": 0.3, "seed": 1},
        {"daily_budget": 10, "explore_share": 1.2, "random_share": 0.3, "seed": 1},
        {"daily_budget": 10, "explore_share": 0.2, "random_share": -0.1, "seed": 1},
    ],
)
def test_a_meaningless_policy_names_the_parameter(params):
    with pytest.raises(ValueError, match="queue\\."):
        QueuePolicy.from_params(params)


def test_worked_items_stay_with_their_reason_and_spend_their_share():
    policy = QueuePolicy(daily_budget=20, explore_share=0.5, random_share=0.4, seed=1)
    rows = day_rows()
    kept = [QueueItem("t0001", 7, EXPLORE_RANDOM, 0.01, "ALLOW", "v1"),
            QueueItem("t0002", 1, EXPLOIT, 0.99, "BLOCK", "v1")]  # fmt: skip
    items = select_queue(rows, policy, DAY, kept)
    assert len(items) == 20 and [q.position for q in items] == list(range(1, 21))
    assert {r: len(v) for r, v in by_reason(items).items()} == policy.sizes()
    reasons = {q.transaction_id: q.reason for q in items}
    assert (reasons["t0001"], reasons["t0002"]) == (EXPLORE_RANDOM, EXPLOIT)


def test_items_held_beyond_a_reasons_share_never_overspend_k():
    policy = QueuePolicy(daily_budget=4, explore_share=0.5, random_share=0.5, seed=1)
    kept = [QueueItem(f"k{i}", i, EXPLORE_RANDOM, 0.01, "ALLOW", "v1") for i in range(3)]
    items = select_queue(day_rows(), policy, DAY, kept)
    assert len(items) == 4 and sum(q.reason == EXPLORE_RANDOM for q in items) == 3


def test_a_run_rebuilds_yesterday_and_today():
    from jobs.review_queue import days_to_build

    late = datetime(2026, 3, 2, 0, 5, tzinfo=UTC)
    assert days_to_build(late) == [DAY, date(2026, 3, 2)]
