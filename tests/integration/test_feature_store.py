"""The Redis feature state (fraudops.feature_store) on a real redis-server: it reproduces
`batch_features` row by row, in micro-batches, across state objects sharing one Redis and
across a Redis restart; concurrent writers of one user count each other; a repeated
transaction counts once and keeps its first features; late events get the batch features
of the stream so far; `fraudops-features rebuild` restores the live state from Postgres."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import psycopg2.extras
import pytest

from fraudops.feature_store import (
    HEAVY_LINES,
    RETENTION_SECONDS,
    SCRIPT_ROWS,
    TRIM_SLACK_SECONDS,
    TTL_SECONDS,
    RedisFeatures,
)
from fraudops.features import FEATURE_NAMES, batch_features
from serving import metrics
from serving.feature_state import check_history
from tests.conftest import ROOT
from tests.helpers.stack import fresh_database
from tests.helpers.transactions import make_transactions
from tests.unit.test_feature_parity import DATASETS, TOLERANCE

COUNT_1H = FEATURE_NAMES.index("tx_count_1h")


@pytest.fixture(params=sorted(DATASETS))
def dataset(request) -> pd.DataFrame:
    return DATASETS[request.param]()


def rows_of(frame: pd.DataFrame) -> list[dict]:
    return frame.to_dict("records")


def micro_batches(rows: list, seed: int = 0) -> list[list]:
    """`rows` cut at random points into batches of 1 to 200, in order."""
    cuts = np.cumsum(np.random.default_rng(seed).integers(1, 200, size=len(rows)))
    bounds = [0, *cuts[cuts < len(rows)].tolist(), len(rows)]
    return [rows[a:b] for a, b in itertools.pairwise(bounds)]


def assert_features_equal(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == np.float32 and got.shape == expected.shape
    for i, name in enumerate(FEATURE_NAMES):
        np.testing.assert_allclose(got[:, i], expected[:, i], **TOLERANCE, err_msg=name)


def test_row_by_row_reproduces_batch_features(redis_server, dataset):
    state = RedisFeatures.from_url(redis_server.url)
    got = np.vstack([state.transform(tx) for tx in rows_of(dataset)])
    assert_features_equal(got, batch_features(dataset))


def test_micro_batches_across_states_and_restarts_reproduce_batch_features(redis_server, dataset):
    """Batches go round-robin to two state objects sharing one Redis (two processes); half
    way, Redis itself restarts from its append-only file and a third object joins."""
    batches = micro_batches(rows_of(dataset))
    states = [RedisFeatures.from_url(redis_server.url) for _ in range(2)]
    half = len(batches) // 2
    got = [states[n % 2].transform_many(b) for n, b in enumerate(batches[:half])]
    redis_server.stop()
    redis_server.start()
    states.append(RedisFeatures.from_url(redis_server.url))
    got += [states[n % 3].transform_many(b) for n, b in enumerate(batches[half:])]
    assert_features_equal(np.vstack(got), batch_features(dataset))


def test_concurrent_writers_of_one_user_count_each_other(redis_server):
    """Two writers, one user, same second: a read-then-write race would give two
    transactions the same count; atomic updates give every count from 0 to n-1 once."""
    per_writer = 150
    base = rows_of(make_transactions(1, seed=1))[0]
    results: dict[int, list[float]] = {0: [], 1: []}

    def write(writer: int) -> None:
        state = RedisFeatures.from_url(redis_server.url)
        for i in range(per_writer):
            tx = {**base, "user_id": 77, "timestamp": 1_700_000_000, "amount": 1.0,
                  "transaction_id": f"w{writer}-{i}"}  # fmt: skip
            results[writer].append(float(state.transform(tx)[COUNT_1H]))

    threads = [threading.Thread(target=write, args=(w,)) for w in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    counts = sorted(results[0] + results[1])
    assert counts == [float(c) for c in range(2 * per_writer)]


def test_a_repeated_transaction_counts_once_with_its_first_features(redis_server):
    frame = make_transactions(1500, fraud_rate=0.05, seed=5, days=2)
    rows, expected = rows_of(frame), batch_features(frame)
    rng = np.random.default_rng(4)
    state, other = (RedisFeatures.from_url(redis_server.url) for _ in range(2))
    first_seen: list[int] = []
    for batch_no, batch in enumerate(micro_batches(list(range(len(rows))))):
        seen = [i for i in first_seen if i < batch[0]]
        repeats = rng.choice(seen, size=min(5, len(seen)), replace=False).tolist() if seen else []
        order = batch + repeats + batch[:2]  # earlier rows again, and repeats within the batch
        got = (state if batch_no % 2 else other).transform_many([rows[i] for i in order])
        assert_features_equal(got, expected[order])
        first_seen += batch


def test_late_events_get_the_batch_features_of_the_stream_so_far(redis_server):
    """Events arriving up to hours late: each gets what batch_features gives it over the
    transactions that have arrived by then, and later events count it."""
    frame = make_transactions(400, seed=8, days=2).sort_values("timestamp", kind="stable")
    frame["user_id"] = np.random.default_rng(1).integers(1, 6, len(frame))
    arrival = np.argsort(np.arange(len(frame)) + np.random.default_rng(2).integers(0, 40, 400))
    frame = frame.iloc[arrival].reset_index(drop=True)
    ts = frame["timestamp"].to_numpy()
    assert (ts < np.maximum.accumulate(ts)).sum() > 50  # the stream really has late events
    state = RedisFeatures.from_url(redis_server.url)
    got = np.vstack([state.transform(tx) for tx in rows_of(frame)])
    expected = np.vstack([batch_features(frame.iloc[: k + 1])[k] for k in range(len(frame))])
    assert_features_equal(got, expected)
    # ~80 events a user: each history grew long, and kept its window state in time order
    values = [state.client.get(state.key_of(user)) for user in range(1, 6)]
    assert all(value.startswith(b"#") for value in values)


def test_history_keeps_the_retention_and_the_key_expires(redis_server):
    """Events older than the retention before the newest are dropped once the oldest is
    TRIM_SLACK_SECONDS older still (the windows count only the kept ones), and the key
    expires after the longest window plus the never-seen gap of inactivity."""
    state = RedisFeatures.from_url(redis_server.url)
    base = {**rows_of(make_transactions(1, seed=3))[0], "user_id": 9, "amount": 2.0}
    start, retention, slack = 1_700_000_000, RETENTION_SECONDS, TRIM_SLACK_SECONDS
    times = [start, start + 2 * slack, start + retention + slack - 1, start + retention + slack]
    got = state.transform_many([
        {**base, "timestamp": t, "transaction_id": f"ret-{n}"} for n, t in enumerate(times)
    ])  # fmt: skip
    assert [tx_id for tx_id, _, _ in state.history(9)] == ["ret-1", "ret-2", "ret-3"]
    assert got[:, COUNT_1H].tolist() == [0.0, 0.0, 0.0, 1.0]
    ttl = state.client.ttl(state.key_of(9))
    assert TTL_SECONDS - 60 < ttl <= TTL_SECONDS


def test_a_large_batch_goes_in_bounded_script_calls_and_keeps_batch_features(redis_server):
    """A batch of 2.5 x SCRIPT_ROWS over a few users: three script calls, one after the
    other, the later ones counting the earlier ones (batch features throughout)."""
    frame = make_transactions(int(2.5 * SCRIPT_ROWS), seed=12, days=1)
    frame["user_id"] = np.random.default_rng(3).integers(1, 4, len(frame))
    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    state = RedisFeatures.from_url(redis_server.url)
    state.transform({**rows_of(frame)[0], "user_id": 99, "transaction_id": "load-the-script"})
    state.client.config_resetstat()
    got = state.transform_many(rows_of(frame))
    calls = state.client.info("commandstats")
    scripts = sum(calls.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("evalsha", "eval"))
    assert scripts == 3
    assert_features_equal(got, batch_features(frame))


def test_a_long_history_keeps_batch_features_through_trims_and_repeats(redis_server):
    """One user, an event every 10 minutes for 3 days, in micro-batches: the history grows
    past HEAVY_LINES, keeps its window state in time order, drops what is older than the
    retention; its transaction-id index holds exactly the kept events, and a repeat of a
    kept event still gets its first features."""
    frame = make_transactions(432, seed=21, days=1)
    frame["user_id"] = 31
    frame["timestamp"] = 1_700_000_000 + 600 * np.arange(len(frame))
    rows, expected = rows_of(frame), batch_features(frame)
    state = RedisFeatures.from_url(redis_server.url)
    got = np.vstack([state.transform_many(batch) for batch in micro_batches(rows, seed=2)])
    assert_features_equal(got, expected)

    kept = state.history(31)
    newest = int(frame["timestamp"].iloc[-1])
    assert HEAVY_LINES < len(kept) < len(rows)
    assert min(ts for _, ts, _ in kept) > newest - RETENTION_SECONDS - TRIM_SLACK_SECONDS
    assert state.client.get(state.key_of(31)).startswith(b"#")
    assert state.client.hlen(state.key_of(31) + ":ids") == len(kept)
    again = state.transform_many(rows[-5:])
    np.testing.assert_array_equal(again, got[-5:])
    assert len(state.history(31)) == len(kept)


def test_an_id_with_a_tab_or_newline_is_refused_and_nothing_recorded(redis_server):
    state = RedisFeatures.from_url(redis_server.url)
    base = {**rows_of(make_transactions(1, seed=3))[0], "user_id": 10}
    good = {**base, "transaction_id": "fine"}
    for bad_id in ("a\tb", "a\nb"):
        with pytest.raises(ValueError, match="tab or a newline"):
            state.transform_many([good, {**base, "transaction_id": bad_id}])
    assert state.history(10) == []


@pytest.fixture
def own_database(postgres_server_url):
    """A database of this test alone: the rebuild reads every recent scored row."""
    with fresh_database(postgres_server_url, "fraudops_rebuild") as url:
        yield url


def seed_scored(url: str, rows: list[dict]) -> None:
    """Scored rows as the scorer writes them (only the columns a rebuild reads matter)."""
    values = [
        (r["transaction_id"], r["user_id"], r["timestamp"], r["type"], r["amount"], 0.1,
         "ALLOW", "v1", "stream")
        for r in rows
    ]  # fmt: skip
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            psycopg2.extras.execute_values(
                cur,
                "INSERT INTO scored_transactions (transaction_id, user_id, event_ts, type, "
                "amount, score, band, model_version, source) VALUES %s",
                values,
            )
    finally:
        conn.close()


def dump(state: RedisFeatures, users) -> dict:
    """Every user's recorded (transaction_id, timestamp, amount), in time order."""
    return {user: sorted(state.history(user), key=lambda e: (e[1], e[0])) for user in users}


def test_rebuild_from_postgres_reproduces_the_live_state(redis_servers, own_database):
    frame = make_transactions(3000, fraud_rate=0.05, seed=6, days=3)
    frame["transaction_id"] = [f"rb-{i}" for i in range(len(frame))]
    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    rows = rows_of(frame)
    live_redis, rebuilt_redis = redis_servers(), redis_servers()
    live = RedisFeatures.from_url(live_redis.url)
    rebuilt = RedisFeatures.from_url(rebuilt_redis.url)
    history, later = rows[:2500], rows[2500:]
    for batch in micro_batches(history):
        live.transform_many(batch)
    seed_scored(own_database, history)

    assert check_history(rebuilt, own_database) == len(history)
    gauge = metrics.REGISTRY.get_sample_value("fraudops_feature_store_missing_history_rows")
    assert gauge == len(history)
    env = {**os.environ, "REDIS_URL": rebuilt_redis.url, "DATABASE_URL": own_database}
    result = subprocess.run(
        [sys.executable, "-m", "serving.feature_state", "rebuild", "--since", "7d"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"replayed {len(history)} transactions" in result.stdout

    users = sorted({r["user_id"] for r in rows})
    assert dump(rebuilt, users) == dump(live, users)
    assert sum(len(h) for h in dump(live, users).values()) > 1000  # the state is not trivial
    assert check_history(rebuilt, own_database) == 0
    continued = rebuilt.transform_many(later)
    np.testing.assert_array_equal(continued, live.transform_many(later))
    assert_features_equal(continued, batch_features(frame)[len(history) :])
