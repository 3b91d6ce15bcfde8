"""One suite for every per-user feature state (DESIGN section 5): the in-memory state, the
Redis state (a real redis-server, and a real Redis Cluster of 3 masters and 3 replicas,
where a micro-batch's users span slots and nodes) and the batch transform itself, replayed
as the stream arrives, get the same cases: a user's first event, events in order, late
events, repeats, window edges, many users in one micro-batch, whole datasets row by row and
in micro-batches.
What each must give is the contract (serving/feature_state/contract.py): the features
`batch_features` gives a transaction over its user's transactions that arrived before it,
and a repeat its first features, counted once. Then what only some states have: the kept
history and its trims (memory, Redis); handles in several processes, a Redis restart,
concurrent writers, the script's bounds and layout, and the rebuild from Postgres (Redis)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import psycopg2.extras
import pytest
import redis

from fraudops.features import (
    COUNTRY_WINDOW_SECONDS,
    FEATURE_NAMES,
    MAX_GAP_SECONDS,
    N_FEATURES,
    N_VELOCITY,
    STATE_FEATURES,
    batch_features,
    location_features,
    velocity_features,
)
from serving import metrics
from serving.feature_state import (
    FeatureState,
    MemoryFeatures,
    RedisFeatures,
    check_history,
    redis_store,
)
from serving.feature_state.contract import RETENTION_SECONDS, TRIM_SLACK_SECONDS, TTL_SECONDS
from serving.feature_state.redis_store import HEAVY_LINES, SCRIPT_ROWS
from testkit.stack import fresh_database
from testkit.transactions import make_transactions
from tests.conftest import ROOT
from training.lib.simulator import SimConfig, simulate

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
COUNT_1H = FEATURE_NAMES.index("tx_count_1h")
# The per-user columns (velocity, then location), the last of the feature vector.
STATE = slice(N_FEATURES - len(STATE_FEATURES), N_FEATURES)
VELOCITY = slice(STATE.start, STATE.start + N_VELOCITY)
LOCATION = slice(STATE.start + N_VELOCITY, N_FEATURES)
KINDS = ("memory", "redis", "redis-cluster", "batch")


class BatchReplay:
    """The batch transform as a feature state, the contract's own words: a new transaction
    gets the per-user features `batch_features` gives it over its user's distinct
    transactions so far, itself last; a repeat gets its first ones."""

    shared = False

    def __init__(self) -> None:
        self._rows: dict[int, list[Mapping]] = {}
        self._first: dict[tuple[int, str], np.ndarray] = {}

    def transform(self, tx: Mapping) -> np.ndarray:
        return self.transform_many([tx])[0]

    def transform_many(self, txs: Sequence[Mapping]) -> np.ndarray:
        if not txs:
            return np.zeros((0, N_FEATURES), dtype=np.float32)
        return np.vstack([self._one(tx) for tx in txs])

    def record(self, txs: Sequence[Mapping]) -> None:
        self.transform_many(txs)

    def history(self, user_id: int) -> list[tuple[str, int, float]]:
        rows = self._rows.get(user_id, [])
        events = [(str(r["transaction_id"]), int(r["timestamp"]), r["amount"]) for r in rows]
        return sorted(events, key=lambda e: e[1])

    def is_empty(self) -> bool:
        return not self._rows

    def _one(self, tx: Mapping) -> np.ndarray:
        key = (int(tx["user_id"]), str(tx["transaction_id"]))
        if key not in self._first:
            rows = self._rows.setdefault(key[0], [])
            rows.append(tx)
            self._first[key] = batch_features(columns(rows))[-1, STATE]
        features = batch_features(columns([tx]))[0]
        features[STATE] = self._first[key]
        return features


def columns(rows: Sequence[Mapping]) -> dict[str, list]:
    return {name: [row[name] for row in rows] for name in rows[0]}


@pytest.fixture(params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture
def open_state(kind, request) -> Callable[[], FeatureState]:
    """Opens a handle on the test's one state: for Redis a new client of one server (as
    another process would), otherwise the same object (another caller in the process)."""
    if kind == "redis":
        server = request.getfixturevalue("redis_server")
        return lambda: RedisFeatures.from_url(server.url)
    if kind == "redis-cluster":
        url, prefix = request.getfixturevalue("redis_cluster").url, uuid.uuid4().hex
        return lambda: RedisFeatures.from_url(url, prefix=prefix, timeout=5)
    state = MemoryFeatures() if kind == "memory" else BatchReplay()
    return lambda: state


def assert_features_equal(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == np.float32 and got.shape == expected.shape
    for i, name in enumerate(FEATURE_NAMES):
        np.testing.assert_allclose(got[:, i], expected[:, i], **TOLERANCE, err_msg=name)


def rows_of(frame: pd.DataFrame) -> list[dict]:
    return frame.to_dict("records")


def micro_batches(rows: list, seed: int = 0) -> list[list]:
    """`rows` cut at random points into batches of 1 to 200, in order."""
    cuts = np.cumsum(np.random.default_rng(seed).integers(1, 200, size=len(rows)))
    bounds = [0, *cuts[cuts < len(rows)].tolist(), len(rows)]
    return [rows[a:b] for a, b in itertools.pairwise(bounds)]


# --- The cases, written out: (user, timestamp, amount, transaction_id) per event, in
# micro-batches; per event the raw velocity it must get: (count 1h, sum 1h, count 24h,
# sum 24h, seconds since the user's previous event or None).

T0 = 1_700_000_000
NEVER = (0, 0.0, 0, 0.0, None)
# fmt: off
CASES = {
    "a user's first event": ([[(1, T0, 10.0, "a")]], [NEVER]),
    "in order": ([[(1, 100, 10.0, "a"), (1, 200, 20.0, "b")]], [NEVER, (1, 10.0, 1, 10.0, 100)]),
    # The late event counts the one before it in time, not the newer one, and the gap is to
    # that earlier one; the next event counts all three.
    "late event": (
        [[(1, 100, 10.0, "a")], [(1, 200, 20.0, "b")], [(1, 150, 40.0, "c")],
         [(1, 250, 80.0, "d")]],
        [NEVER, (1, 10.0, 1, 10.0, 100), (1, 10.0, 1, 10.0, 50), (3, 70.0, 3, 70.0, 50)],
    ),
    "late event outside the newer one's hour": (
        [[(1, T0, 1.0, "a"), (1, T0 + 7200, 2.0, "b"), (1, T0 + 100, 4.0, "c")],
         [(1, T0 + 7300, 8.0, "d")]],
        [NEVER, (0, 0.0, 1, 1.0, 7200), (1, 1.0, 1, 1.0, 100), (1, 2.0, 3, 7.0, 100)],
    ),
    "late tie": (
        [[(1, T0, 1.0, "a"), (1, T0 + 100, 2.0, "b")],
         [(1, T0, 4.0, "c"), (1, T0 + 200, 8.0, "d")]],
        [NEVER, (1, 1.0, 1, 1.0, 100), (1, 1.0, 1, 1.0, 0), (3, 7.0, 3, 7.0, 100)],
    ),
    # Repeats in a later batch and within one batch: the first features, counted once.
    "repeats": (
        [[(1, 100, 10.0, "a"), (1, 200, 20.0, "b")],
         [(1, 100, 10.0, "a"), (1, 300, 40.0, "c"), (1, 300, 40.0, "c"), (1, 200, 20.0, "b")]],
        [NEVER, (1, 10.0, 1, 10.0, 100), NEVER, (2, 30.0, 2, 30.0, 100),
         (2, 30.0, 2, 30.0, 100), (1, 10.0, 1, 10.0, 100)],
    ),
    # A repeated id with other fields: its first features, and its first fields are kept.
    "repeat with other fields": (
        [[(1, 100, 10.0, "a")], [(1, 5000, 999.0, "a"), (1, 5000, 1.0, "b")]],
        [NEVER, NEVER, (0, 0.0, 1, 10.0, 4900)],
    ),
    # A window holds (ts - window, ts]: an event exactly one window earlier is out of it;
    # a same-second event that arrived earlier is in it.
    "window edges": (
        [[(1, T0, 1.0, "a"), (1, T0, 2.0, "b"), (1, T0 + 3600, 4.0, "c"), (1, T0 + 3601, 8.0, "d"),
          (1, T0 + 86400, 16.0, "e"), (1, T0 + 86401, 32.0, "f")]],
        [NEVER, (1, 1.0, 1, 1.0, 0), (0, 0.0, 2, 3.0, 3600), (1, 4.0, 3, 7.0, 1),
         (0, 0.0, 2, 12.0, 82799), (1, 16.0, 3, 28.0, 1)],
    ),
    "gap beyond the cap": (
        [[(1, T0, 1.0, "a")], [(1, T0 + MAX_GAP_SECONDS + 5, 2.0, "b")]],
        [NEVER, (0, 0.0, 0, 0.0, MAX_GAP_SECONDS + 5)],
    ),
    "many users in a micro-batch": (
        [[(1, T0, 1.0, "a"), (2, T0, 2.0, "b"), (1, T0 + 10, 4.0, "c"), (3, T0 + 5, 8.0, "d"),
          (2, T0 + 20, 16.0, "e"), (1, T0 + 30, 32.0, "f")]],
        [NEVER, NEVER, (1, 1.0, 1, 1.0, 10), NEVER, (1, 2.0, 1, 2.0, 20), (2, 5.0, 2, 5.0, 20)],
    ),
}
# fmt: on
TEMPLATE = rows_of(make_transactions(1, seed=3))[0]


def case_batches(batches: list[list[tuple]]) -> list[list[dict]]:
    return [
        [{**TEMPLATE, "user_id": u, "timestamp": t, "amount": a, "transaction_id": i}
         for u, t, a, i in batch]
        for batch in batches
    ]  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_case(open_state, case):
    batches, expected = CASES[case]
    state = open_state()
    got = np.vstack([state.transform_many(batch) for batch in case_batches(batches)])
    raw = [[c1, s1, c24, s24, -1 if gap is None else gap] for c1, s1, c24, s24, gap in expected]
    np.testing.assert_allclose(got[:, VELOCITY], velocity_features(raw), **TOLERANCE)


def test_a_repeat_is_counted_once_in_the_history(open_state):
    state = open_state()
    batches = case_batches(CASES["repeats"][0])
    for batch in batches:
        state.transform_many(batch)
    assert [(i, t, a) for i, t, a in state.history(1)] == [
        ("a", 100, 10.0), ("b", 200, 20.0), ("c", 300, 40.0)
    ]  # fmt: skip


# --- Location: per event (user, timestamp, IP country, transaction_id) in micro-batches, and
# the (new country, distinct countries in 24 h) each must get; "" is unknown.

DAY = COUNTRY_WINDOW_SECONDS
# fmt: off
PLACES = {
    "unknown is its own value": ([[(1, T0, "", "a"), (1, T0 + 1, "DE", "b"), (1, T0 + 2, "", "c")]],
                                 [(0, 0), (1, 1), (0, 0)]),
    "home, then abroad": ([[(1, T0, "DE", "a"), (1, T0 + 60, "DE", "b"), (1, T0 + 120, "BR", "c")]],
                          [(1, 1), (0, 1), (1, 2)]),
    # A country stays known beyond the window; the window holds (ts - 24 h, ts].
    "window edges": ([[(1, T0, "DE", "a"), (1, T0 + DAY - 1, "FR", "b"), (1, T0 + DAY, "FR", "c"),
                       (1, T0 + 3 * DAY, "DE", "d")]],
                     [(1, 1), (1, 2), (0, 1), (0, 1)]),
    # A late event is judged against the events before it in time; a later one counts it.
    "late event": ([[(1, T0 + 100, "DE", "a")], [(1, T0 + 50, "BR", "b")],
                    [(1, T0 + 10, "DE", "c")], [(1, T0 + 200, "BR", "d")]],
                   [(1, 1), (1, 1), (1, 1), (0, 2)]),
    # Late behind events of other countries: each judged by what came at or before it.
    "late among countries": ([[(1, T0 + 100, "DE", "a"), (1, T0 + 200, "BR", "b"),
                               (1, T0 + 150, "FR", "c")], [(1, T0 + 50, "BR", "d"),
                               (1, T0 + 300, "DE", "e")]],
                             [(1, 1), (1, 2), (1, 2), (1, 1), (0, 3)]),
    "repeats": ([[(1, T0, "DE", "a"), (1, T0 + 5, "BR", "b")],
                 [(1, T0, "DE", "a"), (1, T0 + 9, "BR", "b")]],
                [(1, 1), (1, 2), (1, 1), (1, 2)]),
    "users apart": ([[(1, T0, "DE", "a"), (2, T0 + 1, "BR", "b"), (2, T0 + 2, "DE", "c")]],
                    [(1, 1), (1, 1), (1, 2)]),
}
# fmt: on


@pytest.mark.parametrize("case", sorted(PLACES))
def test_location_case(open_state, case):
    batches, expected = PLACES[case]
    state = open_state()
    rows = [[{**TEMPLATE, "user_id": u, "timestamp": t, "amount": 5.0, "transaction_id": i,
              "ip_country": c, "ip_kind": "public" if c else "unknown", "card_country": "DE"}
             for u, t, c, i in batch] for batch in batches]  # fmt: skip
    got = np.vstack([state.transform_many(batch) for batch in rows])
    np.testing.assert_allclose(got[:, LOCATION], location_features(expected), **TOLERANCE)


def with_places(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """`frame` with IP and card countries: mostly each user's home, some travel, some
    unknown, and cards issued elsewhere."""
    rng = np.random.default_rng(seed)
    homes = np.array(["DE", "FR", "BR", "US"])[frame["user_id"].to_numpy() % 4]
    away = rng.choice(["GB", "NG", "BR", "JP"], len(frame))
    roll = rng.random(len(frame))
    frame = frame.copy()
    frame["ip_country"] = np.where(roll < 0.15, "", np.where(roll < 0.35, away, homes))
    frame["ip_kind"] = np.where(frame["ip_country"] == "", "unknown", "public")
    frame["card_country"] = np.where(rng.random(len(frame)) < 0.1, "US", homes)
    return frame


# --- Whole datasets: in time order each state gives exactly `batch_features`.


def edge_cases() -> pd.DataFrame:
    """Rows that stress the windows: same-second ties, a row exactly one window after
    another, gaps longer than MAX_GAP_SECONDS, one user with many rows in an hour."""
    base = make_transactions(12, seed=9).iloc[[0] * 12].reset_index(drop=True)
    offsets = [0, 0, 0, 3600, 3601, 86400, 86400, 86401, 86401 + MAX_GAP_SECONDS + 5]
    offsets += [86401 + MAX_GAP_SECONDS + 6 + i for i in range(3)]
    base["timestamp"] = np.array(offsets, dtype=np.int64) + T0
    base["user_id"] = np.int64(42)
    base["amount"] = np.arange(1, 13) * 100.0
    base["transaction_id"] = [f"edge-{i}" for i in range(12)]
    return base


def simulated() -> pd.DataFrame:
    """A small run of the project's PaySim-style simulator (bursty fraud episodes)."""
    cfg = SimConfig(
        n_users=300, n_steps=72, start=1_704_067_200, tx_per_user_day=3.0,
        ato_rate=0.01, card_testing_rate=0.01, seed=3,
    )  # fmt: skip
    return simulate(cfg).sort_values("timestamp", kind="stable").reset_index(drop=True)


DATASETS = {
    "toy": lambda: make_transactions(3000, fraud_rate=0.05, seed=5, days=3),
    "located": lambda: with_places(make_transactions(3000, fraud_rate=0.05, seed=6, days=3)),
    "simulator": simulated,
    "edge_cases": edge_cases,
}


@pytest.fixture(params=sorted(DATASETS))
def dataset(request) -> pd.DataFrame:
    return DATASETS[request.param]()


def test_row_by_row_reproduces_batch_features(open_state, dataset):
    state = open_state()
    got = np.vstack([state.transform(tx) for tx in rows_of(dataset)])
    assert_features_equal(got, batch_features(dataset))


def test_micro_batches_across_handles_reproduce_batch_features(open_state, dataset):
    """Batches go round-robin to two handles on one state (two processes for Redis)."""
    handles = [open_state(), open_state()]
    batches = micro_batches(rows_of(dataset))
    got = [handles[n % 2].transform_many(b) for n, b in enumerate(batches)]
    assert_features_equal(np.vstack(got), batch_features(dataset))


def test_simulated_data_exercises_the_velocity_windows():
    """Guard against vacuous dataset cases: the data must have repeat users in a window."""
    features = batch_features(simulated())
    assert features[:, COUNT_1H].max() >= 2
    assert (features[:, FEATURE_NAMES.index("tx_count_24h")] > 0).mean() > 0.1


def test_late_events_get_the_batch_features_of_the_stream_so_far(open_state):
    """Events arriving up to hours late: each gets what batch_features gives it over all the
    transactions that have arrived by then, and later events count it."""
    frame = make_transactions(400, seed=8, days=2).sort_values("timestamp", kind="stable")
    frame["user_id"] = np.random.default_rng(1).integers(1, 6, len(frame))
    frame = with_places(frame, seed=3)
    arrival = np.argsort(np.arange(len(frame)) + np.random.default_rng(2).integers(0, 40, 400))
    frame = frame.iloc[arrival].reset_index(drop=True)
    ts = frame["timestamp"].to_numpy()
    assert (ts < np.maximum.accumulate(ts)).sum() > 50  # the stream really has late events
    state = open_state()
    got = np.vstack([state.transform_many(batch) for batch in micro_batches(rows_of(frame))])
    expected = np.vstack([batch_features(frame.iloc[: k + 1])[k] for k in range(len(frame))])
    assert_features_equal(got, expected)


def test_repeated_transactions_count_once_with_their_first_features(open_state):
    frame = with_places(make_transactions(1500, fraud_rate=0.05, seed=5, days=2), seed=4)
    rows, expected = rows_of(frame), batch_features(frame)
    rng = np.random.default_rng(4)
    handles = [open_state(), open_state()]
    first_seen: list[int] = []
    for batch_no, batch in enumerate(micro_batches(list(range(len(rows))))):
        seen = [i for i in first_seen if i < batch[0]]
        repeats = rng.choice(seen, size=min(5, len(seen)), replace=False).tolist() if seen else []
        order = batch + repeats + batch[:2]  # earlier rows again, and repeats within the batch
        got = handles[batch_no % 2].transform_many([rows[i] for i in order])
        assert_features_equal(got, expected[order])
        first_seen += batch


# --- The kept history: states that keep a bounded one (not the batch transform).

KEPT = pytest.mark.parametrize("kind", ["memory", "redis"])


@KEPT
def test_history_keeps_the_retention(open_state):
    """Events older than the retention before the newest are dropped once the oldest is
    TRIM_SLACK_SECONDS older still (the windows count only the kept ones)."""
    state = open_state()
    start, retention, slack = T0, RETENTION_SECONDS, TRIM_SLACK_SECONDS
    times = [start, start + 2 * slack, start + retention + slack - 1, start + retention + slack]
    got = state.transform_many([
        {**TEMPLATE, "user_id": 9, "amount": 2.0, "timestamp": t, "transaction_id": f"ret-{n}"}
        for n, t in enumerate(times)
    ])  # fmt: skip
    assert [tx_id for tx_id, _, _ in state.history(9)] == ["ret-1", "ret-2", "ret-3"]
    assert got[:, COUNT_1H].tolist() == [0.0, 0.0, 0.0, 1.0]


def long_history() -> pd.DataFrame:
    """One user, an event every 10 minutes for 3 days."""
    frame = make_transactions(432, seed=21, days=1)
    frame["user_id"] = 31
    frame = with_places(frame, seed=5)
    frame["timestamp"] = T0 + 600 * np.arange(len(frame))
    return frame


@KEPT
def test_a_long_history_keeps_batch_features_through_trims_and_repeats(open_state):
    """Micro-batches of a long history: batch features throughout, what is older than the
    retention dropped, and a repeat of a kept event still gets its first features."""
    frame = long_history()
    rows, state = rows_of(frame), open_state()
    got = np.vstack([state.transform_many(batch) for batch in micro_batches(rows, seed=2)])
    assert_features_equal(got, batch_features(frame))
    kept = state.history(31)
    newest = int(frame["timestamp"].iloc[-1])
    assert HEAVY_LINES < len(kept) < len(rows)
    assert min(ts for _, ts, _ in kept) > newest - RETENTION_SECONDS - TRIM_SLACK_SECONDS
    np.testing.assert_array_equal(state.transform_many(rows[-5:]), got[-5:])
    assert state.history(31) == kept


# --- Redis only: processes, restarts, the script's layout and bounds, the rebuild.


def test_redis_keeps_batch_features_across_a_restart(redis_server, dataset):
    """Half way, Redis restarts from its append-only file and a new handle carries on."""
    batches = micro_batches(rows_of(dataset))
    half = len(batches) // 2
    before = RedisFeatures.from_url(redis_server.url)
    got = [before.transform_many(b) for b in batches[:half]]
    redis_server.stop()
    redis_server.start()
    after = RedisFeatures.from_url(redis_server.url)
    got += [after.transform_many(b) for b in batches[half:]]
    assert_features_equal(np.vstack(got), batch_features(dataset))


def test_concurrent_writers_of_one_user_count_each_other(redis_server):
    """Two writers, one user, same second: a read-then-write race would give two
    transactions the same count; atomic updates give every count from 0 to n-1 once."""
    per_writer = 150
    results: dict[int, list[float]] = {0: [], 1: []}

    def write(writer: int) -> None:
        state = RedisFeatures.from_url(redis_server.url)
        for i in range(per_writer):
            tx = {**TEMPLATE, "user_id": 77, "timestamp": T0, "amount": 1.0,
                  "transaction_id": f"w{writer}-{i}"}  # fmt: skip
            results[writer].append(float(state.transform(tx)[COUNT_1H]))

    threads = [threading.Thread(target=write, args=(w,)) for w in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    counts = sorted(results[0] + results[1])
    assert counts == [float(c) for c in range(2 * per_writer)]


def test_a_redis_key_expires_after_the_ttl(redis_server):
    state = RedisFeatures.from_url(redis_server.url)
    state.transform({**TEMPLATE, "user_id": 9, "timestamp": T0, "transaction_id": "ttl"})
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
    assert scripts == 2 * 3  # the velocity and the location script, sent together each time
    assert_features_equal(got, batch_features(frame))


def test_a_long_redis_history_keeps_its_window_state_and_id_index(redis_server):
    """A history grown past HEAVY_LINES is kept in time order behind its window state, and
    its transaction-id index holds exactly the kept events."""
    state = RedisFeatures.from_url(redis_server.url)
    for batch in micro_batches(rows_of(long_history()), seed=2):
        state.transform_many(batch)
    assert state.client.get(state.key_of(31)).startswith(b"#")
    assert state.client.hlen(state.key_of(31) + ":ids") == len(state.history(31))


def test_an_id_with_a_tab_or_newline_is_refused_and_nothing_recorded(redis_server):
    state = RedisFeatures.from_url(redis_server.url)
    base = {**TEMPLATE, "user_id": 10}
    good = {**base, "transaction_id": "fine"}
    for bad_id in ("a\tb", "a\nb"):
        with pytest.raises(ValueError, match="tab or a newline"):
            state.transform_many([good, {**base, "transaction_id": bad_id}])
    assert state.history(10) == []


def test_the_script_refuses_keys_it_was_not_given_and_writes_nothing(redis_server):
    """Every key the script touches is declared: a transaction's history key and its id
    index, in pairs; a call that breaks the pairing is refused before anything is written."""
    state = RedisFeatures.from_url(redis_server.url)
    keys, args = state._arguments([{**TEMPLATE, "user_id": 11, "transaction_id": "k"}])
    assert keys == [state.key_of(11), state.key_of(11) + ":ids"]
    other = state.key_of(12) + ":ids"
    for bad in ([keys[0]], [keys[0], other], [*keys, *keys]):
        with pytest.raises(redis.ResponseError, match="fraudops: "):
            state.client.eval(redis_store.SCRIPT, len(bad), *bad, *args)
    assert state.client.dbsize() == 0


@pytest.fixture
def own_database(postgres_server_url):
    """A database of this test alone: the rebuild reads every recent scored row."""
    with fresh_database(postgres_server_url, "fraudops_rebuild") as url:
        yield url


def seed_scored(url: str, rows: list[dict]) -> None:
    """Scored rows as the scorer writes them (only the columns a rebuild reads matter)."""
    values = [
        (r["transaction_id"], r["user_id"], r["timestamp"], r["type"], r["amount"], 0.1,
         "ALLOW", "v1", "stream", r.get("ip_country", ""))
        for r in rows
    ]  # fmt: skip
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            psycopg2.extras.execute_values(
                cur,
                "INSERT INTO scored_transactions (transaction_id, user_id, event_ts, type, "
                "amount, score, band, model_version, source, ip_country) VALUES %s",
                values,
            )
    finally:
        conn.close()


def dump(state: FeatureState, users) -> dict:
    """Every user's recorded (transaction_id, timestamp, amount), in time order."""
    return {user: sorted(state.history(user), key=lambda e: (e[1], e[0])) for user in users}


def test_rebuild_from_postgres_reproduces_the_live_state(redis_servers, own_database):
    frame = make_transactions(3000, fraud_rate=0.05, seed=6, days=3)
    frame["transaction_id"] = [f"rb-{i}" for i in range(len(frame))]
    # The user's countries are state too: a rebuild without them reads every next one as new.
    countries = np.random.default_rng(6).choice(["DE", "FR", "BR", "NA", ""], len(frame))
    frame["ip_country"] = frame["card_country"] = countries
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
        [sys.executable, "-m", "serving.feature_state.rebuild", "rebuild", "--since", "7d"],
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
