"""The per-user feature state in this process's memory (no `REDIS_URL`): what a single
scoring process uses, forgotten on restart. Its semantics are the contract's
(serving.feature_state.contract), computed by the batch transform's own window rule
(`fraudops.features.window_sums`) over each user's history: the batch transform searches
one sorted array of every row, this state one user's sorted events, with `bisect`.

A user's history is its kept events in time order (ties in arrival order), with prefix
sums of their amounts, so an event in time order costs two bisections and an append, and
a late one an insertion (linear in the user's kept events, as in Redis). Beside it, the
user's `LocationHistory` (fraudops.features) gives the location values; a transaction's
first values (velocity, then location) are what a repeat gets."""

from __future__ import annotations

import itertools
from bisect import bisect_right
from collections.abc import Mapping, Sequence

import numpy as np

from fraudops.features import (
    N_FEATURES,
    N_VELOCITY,
    LocationHistory,
    location_features,
    static_matrix,
    velocity_features,
    window_sums,
)
from serving.feature_state.contract import RETENTION_SECONDS, TRIM_SLACK_SECONDS


class _History:
    """One user's kept events in time order; `prefix[k]` sums the first k amounts,
    `first` maps each kept transaction_id to the raw values it was first given, and
    `places` is the user's location history (one lookup of the user finds both)."""

    __slots__ = ("amounts", "first", "ids", "places", "prefix", "times")

    def __init__(self) -> None:
        self.times: list[int] = []
        self.amounts: list[float] = []
        self.ids: list[str] = []
        self.prefix: list[float] = [0.0]
        self.first: dict[str, list] = {}
        self.places = LocationHistory()

    def add(self, tx_id: str, ts: int, amount: float) -> list:
        """The raw velocity values of a new event, which is then recorded."""
        times, at = self.times, bisect_right(self.times, ts)
        values = window_sums(times, self.prefix, at, ts, bisect_right)
        values.append(ts - times[at - 1] if at else -1)
        if at == len(times):
            times.append(ts)
            self.amounts.append(amount)
            self.ids.append(tx_id)
            self.prefix.append(self.prefix[-1] + amount)
        else:  # late: put it in its place; the later prefix sums move by its amount
            times.insert(at, ts)
            self.amounts.insert(at, amount)
            self.ids.insert(at, tx_id)
            self.prefix[at:] = itertools.accumulate(self.amounts[at:], initial=self.prefix[at])
        self.first[tx_id] = values
        if times[0] <= ts - RETENTION_SECONDS - TRIM_SLACK_SECONDS:
            self._trim(ts - RETENTION_SECONDS)
        return values

    def _trim(self, cutoff: int) -> None:
        """Drop the events at or before `cutoff`, and their transaction ids."""
        drop = bisect_right(self.times, cutoff)
        for tx_id in self.ids[:drop]:
            del self.first[tx_id]
        del self.times[:drop], self.amounts[:drop], self.ids[:drop]
        self.prefix = list(itertools.accumulate(self.amounts, initial=0.0))


class MemoryFeatures:
    """The feature state in one process's memory (see the module docstring)."""

    shared = False  # callers that share one instance across threads serialise their calls

    def __init__(self) -> None:
        self._users: dict[int, _History] = {}

    def transform(self, tx: Mapping) -> np.ndarray:
        return self.transform_many([tx])[0]

    def transform_many(self, txs: Sequence[Mapping]) -> np.ndarray:
        """Features of a micro-batch, in order; static and finishing steps vectorised."""
        if not txs:
            return np.zeros((0, N_FEATURES), dtype=np.float32)
        raw = np.array([self._velocity(tx) for tx in txs], dtype=np.float64)
        velocity, location = raw[:, :N_VELOCITY], raw[:, N_VELOCITY:]
        return np.hstack(
            [static_matrix(txs), velocity_features(velocity), location_features(location)]
        ).astype(np.float32)

    def record(self, txs: Sequence[Mapping]) -> None:
        for tx in txs:
            self._velocity(tx)

    def history(self, user_id: int) -> list[tuple[str, int, float]]:
        user = self._users.get(int(user_id))
        if user is None:
            return []
        return list(zip(user.ids, user.times, user.amounts, strict=True))

    def is_empty(self) -> bool:
        return not self._users

    def _velocity(self, tx: Mapping) -> list:
        """A transaction's raw velocity and location values: its first ones if its id is
        kept."""
        user_id, tx_id = int(tx["user_id"]), str(tx["transaction_id"])
        user = self._users.get(user_id)
        if user is None:
            user = self._users[user_id] = _History()
        elif (first := user.first.get(tx_id)) is not None:
            return first
        ts = int(tx["timestamp"])
        values = user.add(tx_id, ts, float(tx["amount"]))
        # The same list `first` keeps for a repeat.
        values += user.places.record(ts, tx.get("ip_country", ""), RETENTION_SECONDS)
        return values
