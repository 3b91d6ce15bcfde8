"""The demo's replay keeps the held-out set's time line: whole users, every timestamp moved
by the same whole number of days to end at or before now, ids and accounts of that day."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraudops.features import batch_features
from scripts.replay import DAY, replay_frame, requests, sample_users
from tests.helpers.transactions import make_transactions

NOW = 1_790_000_000.0  # a fixed "now", months after the frame's time line


@pytest.fixture(scope="module")
def held_out() -> pd.DataFrame:
    frame = make_transactions(3000, seed=3, days=6)
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)  # file order is not time


def test_whole_users_fill_at_most_max_rows(held_out):
    rows = sample_users(held_out, 1000, seed=0)
    sizes = held_out.groupby("user_id").size()
    assert 900 < len(rows) <= 1000
    kept = rows.groupby("user_id").size()
    assert kept.equals(sizes[kept.index])  # every row of each user drawn
    assert rows.equals(sample_users(held_out, 1000, seed=0))
    assert set(rows["user_id"]) != set(sample_users(held_out, 1000, seed=1)["user_id"])


def test_the_time_line_moves_by_whole_days_to_end_by_now(held_out):
    out = replay_frame(held_out, 1000, 0, NOW)
    source = held_out.loc[[int(t.rsplit("-", 1)[1]) for t in out["transaction_id"]]]
    moved = out["timestamp"].to_numpy() - source["timestamp"].to_numpy()
    assert len(set(moved)) == 1 and moved[0] % DAY == 0  # spacing and hour of day kept
    assert NOW - DAY < out["timestamp"].max() <= NOW
    assert (np.diff(out["timestamp"]) >= 0).all()  # sent in event order
    assert out["timestamp"].min() < out["timestamp"].max() - 4 * DAY  # the whole span
    assert (out["amount"].to_numpy() == source["amount"].to_numpy()).all()
    shift = moved[0] // DAY
    assert out["transaction_id"].str.startswith(f"replay-{shift}d-").all()


def test_the_features_are_the_held_out_users_own(held_out):
    """Velocity features of the replayed rows equal those of the same users' held-out rows:
    accounts are renamed and times moved, nothing else."""
    out = replay_frame(held_out, 1000, 0, NOW)
    ordered = held_out.sort_values("timestamp", kind="stable")
    source = ordered[ordered["user_id"].isin(sample_users(held_out, 1000, 0)["user_id"])]
    assert np.array_equal(batch_features(out), batch_features(source.reset_index(drop=True)))


def test_a_rerun_the_same_day_sends_the_same_ids_and_a_later_day_new_accounts(held_out):
    today = replay_frame(held_out, 1000, 0, NOW)
    again = replay_frame(held_out, 1000, 0, NOW + 3600)
    assert today.equals(again)
    tomorrow = replay_frame(held_out, 1000, 0, NOW + DAY)
    assert (tomorrow["timestamp"] == today["timestamp"] + DAY).all()
    assert not set(tomorrow["transaction_id"]) & set(today["transaction_id"])
    assert not set(tomorrow["user_id"]) & set(today["user_id"])
    assert today["user_id"].nunique() == today.groupby("user_id").ngroups


def test_requests_carry_the_rows_timestamps(held_out):
    out = replay_frame(held_out, 50, 0, NOW)
    sent = list(requests(out))
    assert [r.timestamp for r in sent] == out["timestamp"].tolist()
    assert [r.transaction_id for r in sent] == out["transaction_id"].tolist()
    assert {r.channel for r in sent} == {"replay"}
