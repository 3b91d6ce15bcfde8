"""The demo's replay keeps the reference's time line: whole users with their week of history
before the held-out set, every timestamp moved by the same whole number of days to end at or
before now, ids and accounts of that day; each row sent with an address that the server
enriches back to the row's location."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraudops.features import FEATURE_NAMES, MAX_GAP_SECONDS, batch_features
from fraudops.geoip import enrich_columns
from scripts.replay import (
    DAY,
    replay_frame,
    requests,
    sample_users,
    with_addresses,
    with_history,
)
from testkit.stack import GEOIP_DB
from testkit.transactions import START, make_transactions
from training.lib.locations import add_locations

NOW = 1_790_000_000.0  # a fixed "now", months after the frame's time line


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    """20 days of a reference; its last 6 days are held out. File order is not time."""
    frame = make_transactions(10000, seed=3, days=20)
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def held_out(reference) -> pd.DataFrame:
    return reference[reference["timestamp"] >= START + 14 * DAY].reset_index(drop=True)


@pytest.fixture(scope="module")
def history(reference) -> pd.DataFrame:
    return reference[reference["timestamp"] < START + 14 * DAY].reset_index(drop=True)


def test_whole_users_fill_at_most_max_rows(held_out):
    rows = sample_users(held_out, 1000, seed=0)
    sizes = held_out.groupby("user_id").size()
    assert 900 < len(rows) <= 1000
    kept = rows.groupby("user_id").size()
    assert kept.equals(sizes[kept.index])  # every row of each user drawn
    assert rows.equals(sample_users(held_out, 1000, seed=0))
    assert set(rows["user_id"]) != set(sample_users(held_out, 1000, seed=1)["user_id"])


def test_the_time_line_moves_by_whole_days_to_end_by_now(held_out, history):
    out = replay_frame(held_out, history, 1000, 0, NOW)
    by_id = pd.concat([history, held_out]).set_index("transaction_id")
    source = by_id.loc[[t.split("d-", 1)[1] for t in out["transaction_id"]]]
    moved = out["timestamp"].to_numpy() - source["timestamp"].to_numpy()
    assert len(set(moved)) == 1 and moved[0] % DAY == 0  # spacing and hour of day kept
    assert NOW - DAY < out["timestamp"].max() <= NOW
    assert (np.diff(out["timestamp"]) >= 0).all()  # sent in event order
    assert out["timestamp"].min() < out["timestamp"].max() - 12 * DAY  # a week before, 6 days
    assert (out["amount"].to_numpy() == source["amount"].to_numpy()).all()
    shift = moved[0] // DAY
    assert out["transaction_id"].str.startswith(f"replay-{shift}d-").all()


def test_the_history_is_the_week_before_the_held_out_set(held_out, history):
    rows = with_history(held_out, history)
    earlier = rows[rows["timestamp"] < held_out["timestamp"].min()]
    assert len(earlier) > 0 and set(earlier["user_id"]) <= set(held_out["user_id"])
    assert earlier["timestamp"].min() >= held_out["timestamp"].min() - MAX_GAP_SECONDS
    assert len(rows) == len(held_out) + len(earlier)


def test_the_features_are_the_users_own(held_out, history):
    """The replayed rows' features are those of the same users' rows on the reference's own
    time line: accounts are renamed and times moved, nothing else."""
    out = replay_frame(held_out, history, 1000, 0, NOW)
    rows = sample_users(with_history(held_out, history), 1000, 0)
    source = rows.sort_values("timestamp", kind="stable").reset_index(drop=True)
    assert np.array_equal(batch_features(out), batch_features(source))
    gap = FEATURE_NAMES.index("log_seconds_since_last")
    first = batch_features(held_out.sort_values("timestamp", kind="stable"))[:, gap]
    held = out["transaction_id"].str.split("d-").str[1].isin(held_out["transaction_id"])
    assert (batch_features(out)[held.to_numpy(), gap] < first.max()).mean() > 0.95


def test_a_rerun_the_same_day_sends_the_same_ids_and_a_later_day_new_accounts(held_out, history):
    today = replay_frame(held_out, history, 1000, 0, NOW)
    again = replay_frame(held_out, history, 1000, 0, NOW + 3600)
    assert today.equals(again)
    tomorrow = replay_frame(held_out, history, 1000, 0, NOW + DAY)
    assert (tomorrow["timestamp"] == today["timestamp"] + DAY).all()
    assert not set(tomorrow["transaction_id"]) & set(today["transaction_id"])
    assert not set(tomorrow["user_id"]) & set(today["user_id"])
    assert today["user_id"].nunique() == today.groupby("user_id").ngroups


def test_requests_carry_the_rows_timestamps(held_out):
    out = replay_frame(held_out, None, 50, 0, NOW)
    sent = list(requests(out))
    assert [r.timestamp for r in sent] == out["timestamp"].tolist()
    assert [r.transaction_id for r in sent] == out["transaction_id"].tolist()
    assert {r.channel for r in sent} == {"replay"}


def test_each_row_is_sent_with_its_location(held_out, geoip_database):
    """The reference keeps the derived location, never the address: the address sent is
    one the server enriches back to the row's country and kind; the card country as is."""
    located = add_locations(held_out, geoip_database, np.random.default_rng(0))
    out = with_addresses(replay_frame(located, None, 500, 0, NOW), GEOIP_DB, seed=0)
    sent = list(requests(out))
    enriched = enrich_columns([r.ip_address for r in sent], geoip_database)
    assert enriched["ip_country"] == out["ip_country"].tolist()
    assert enriched["ip_kind"] == out["ip_kind"].tolist()
    assert [r.card_country for r in sent] == out["card_country"].tolist()
    assert {"public", "private", "unknown"} <= set(enriched["ip_kind"])
