"""The one feature transform. `batch_features` (vectorised, for featurize) and
`OnlineFeatures` (one transaction at a time with per-user state, for the scorer) compute
the same numbers: a parity test holds them to it. Feature names and order live here only.

Velocity features count a user's *earlier* transactions in a window ending at the current
one. The batch transform orders each user's rows by (timestamp, row order), which is the
order an online scorer sees them when events arrive in time order.

Balances are optional: a row whose `balances_missing` is true (a card payment carries no
account balances) gets 0 in every balance-derived feature and 0 in `balances_present`, so
the model is told the balances are unknown instead of reading zeros as a drained account.
A dataset without the column has every balance present."""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fraudops.schema import TRANSACTION_TYPES

WINDOWS_SECONDS: tuple[int, ...] = (3600, 86400)
MAX_GAP_SECONDS = 7 * 86400  # "never seen" and "a week ago" mean the same to the model


@dataclass(frozen=True)
class Feature:
    name: str
    label: str  # how a reason names it to an analyst
    balance_derived: bool = False  # leaks the label in PaySim-style data; see evaluate


FEATURES: tuple[Feature, ...] = (
    Feature("log_amount", "amount"),
    Feature("log_old_balance_orig", "origin balance before", True),
    Feature("log_new_balance_orig", "origin balance after", True),
    Feature("log_old_balance_dest", "destination balance before", True),
    Feature("log_new_balance_dest", "destination balance after", True),
    Feature("error_balance_orig", "origin balance mismatch", True),
    Feature("error_balance_dest", "destination balance mismatch", True),
    Feature("amount_to_balance_orig", "amount relative to origin balance", True),
    Feature("orig_emptied", "origin account emptied", True),
    Feature("is_unauthorized_overdraft", "unauthorized overdraft", True),
    Feature("balances_present", "whether account balances are known"),
    Feature("hour_sin", "hour of day"),
    Feature("hour_cos", "hour of day"),
    *(Feature(f"type_{t}", f"type {t}") for t in TRANSACTION_TYPES),
    Feature("tx_count_1h", "transactions by this user in the last hour"),
    Feature("log_amount_sum_1h", "amount sent by this user in the last hour"),
    Feature("tx_count_24h", "transactions by this user in the last 24 hours"),
    Feature("log_amount_sum_24h", "amount sent by this user in the last 24 hours"),
    Feature("log_seconds_since_last", "time since this user's previous transaction"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
BALANCE_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.balance_derived)
N_FEATURES = len(FEATURES)
_BALANCE_COLUMNS = [FEATURE_NAMES.index(n) for n in BALANCE_FEATURES]
_PRESENT_COLUMN = FEATURE_NAMES.index("balances_present")


def _signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def _static_features(cols: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Features that depend on the transaction alone, in FEATURES order."""
    amount = np.asarray(cols["amount"], dtype=np.float64)
    old_o = np.asarray(cols["old_balance_orig"], dtype=np.float64)
    new_o = np.asarray(cols["new_balance_orig"], dtype=np.float64)
    old_d = np.asarray(cols["old_balance_dest"], dtype=np.float64)
    new_d = np.asarray(cols["new_balance_dest"], dtype=np.float64)
    hour = (np.asarray(cols["timestamp"], dtype=np.int64) // 3600) % 24
    angle = 2.0 * np.pi * hour / 24.0
    types = np.asarray(cols["type"]).astype(str)
    present = _balances_present(cols, len(amount))
    balance = [
        np.log1p(old_o),
        np.log1p(new_o),
        np.log1p(old_d),
        np.log1p(new_d),
        _signed_log(old_o - amount - new_o),
        _signed_log(old_d + amount - new_d),
        np.minimum(amount / (old_o + 1.0), 1000.0),
        ((old_o > 0) & (new_o == 0)).astype(np.float64),
        np.asarray(cols["is_unauthorized_overdraft"], dtype=np.float64),
    ]
    return [
        np.log1p(amount),
        *(np.where(present > 0, column, 0.0) for column in balance),
        present,
        np.sin(angle),
        np.cos(angle),
        *((types == t).astype(np.float64) for t in TRANSACTION_TYPES),
    ]


def _balances_present(cols: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """1.0 where the row's balances are known, 0.0 where `balances_missing` says not."""
    missing = cols.get("balances_missing") if hasattr(cols, "get") else None
    if missing is None:
        return np.ones(n)
    return 1.0 - np.asarray(missing, dtype=bool).astype(np.float64)


def mask_balances(features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """A copy of `features` with the balances of `rows` (a boolean mask or indices) marked
    missing: exactly what the transform gives those rows with `balances_missing` set, so
    training can teach the model card-payment traffic from rows that had balances."""
    out = np.array(features, copy=True)
    picked = out[rows]
    picked[:, _BALANCE_COLUMNS] = 0.0
    picked[:, _PRESENT_COLUMN] = 0.0
    out[rows] = picked
    return out


def model_inputs(missing_balance_share: float) -> dict[str, object]:
    """model.json's `inputs`: the transaction fields a model reads, which of them may be
    absent (`balances_missing`), and the share of training rows that had them marked so."""
    return {
        "required": ["user_id", "timestamp", "type", "amount"],
        "balances": ["old_balance_orig", "new_balance_orig", "old_balance_dest",
                     "new_balance_dest", "is_unauthorized_overdraft"],
        "balances_optional": missing_balance_share > 0,
        "missing_balance_share": missing_balance_share,
    }  # fmt: skip


def _velocity_features(user: np.ndarray, ts: np.ndarray, amount: np.ndarray) -> list[np.ndarray]:
    """Per-user counts and sums over each window, and the gap since the previous row."""
    n = len(user)
    _, rank = np.unique(user, return_inverse=True)
    order = np.lexsort((np.arange(n), ts, rank))
    # One sorted key per row: rows of one user are contiguous, in time order.
    key = rank[order].astype(np.int64) * (1 << 34) + ts[order]
    prefix = np.concatenate(([0.0], np.cumsum(amount[order])))
    idx = np.arange(n)
    out: list[np.ndarray] = []
    for window in WINDOWS_SECONDS:
        first = np.searchsorted(key, key - window, side="right")
        count, total = np.empty(n), np.empty(n)
        count[order] = idx - first
        total[order] = prefix[idx] - prefix[first]
        out += [count, np.log1p(np.maximum(total, 0.0))]
    gap = np.full(n, float(MAX_GAP_SECONDS))
    same_user = np.zeros(n, dtype=bool)
    same_user[1:] = rank[order][1:] == rank[order][:-1]
    sorted_gap = np.full(n, float(MAX_GAP_SECONDS))
    sorted_gap[1:] = np.where(same_user[1:], np.diff(ts[order]), MAX_GAP_SECONDS)
    gap[order] = np.minimum(sorted_gap, MAX_GAP_SECONDS)
    out.append(np.log1p(gap))
    return out


def batch_features(cols: Mapping[str, np.ndarray]) -> np.ndarray:
    """Features for a whole dataset (a DataFrame or a dict of columns) as float32 (N, F)."""
    user = np.asarray(cols["user_id"], dtype=np.int64)
    ts = np.asarray(cols["timestamp"], dtype=np.int64)
    amount = np.asarray(cols["amount"], dtype=np.float64)
    if len(user) == 0:
        return np.zeros((0, N_FEATURES), dtype=np.float32)
    columns = _static_features(cols) + _velocity_features(user, ts, amount)
    return np.column_stack(columns).astype(np.float32)


class _UserWindows:
    """One user's transactions within the longest window, sorted by time, with a running
    count and amount sum per window: the last `counts[w]` events are those inside window
    w of the newest timestamp, so a transaction in time order costs O(evicted), not
    O(history)."""

    __slots__ = ("counts", "events", "newest", "sums")

    def __init__(self) -> None:
        self.events: deque[tuple[int, float]] = deque()
        self.counts = [0] * len(WINDOWS_SECONDS)
        self.sums = [0.0] * len(WINDOWS_SECONDS)
        self.newest = -(2**63)

    def advance(self, ts: int) -> list[float]:
        """Slide every window to end at `ts` (>= newest); its count and log amount sum."""
        events, counts, sums = self.events, self.counts, self.sums
        values: list[float] = []
        for w, window in enumerate(WINDOWS_SECONDS):
            count, total, cutoff = counts[w], sums[w], ts - window
            while count and events[-count][0] <= cutoff:
                total -= events[-count][1]
                count -= 1
            if not count:
                total = 0.0  # an empty window restarts the sum: no drift carries over
            counts[w], sums[w] = count, total
            values += [float(count), math.log1p(max(total, 0.0))]
        horizon = ts - _HORIZON
        while events and events[0][0] <= horizon:
            events.popleft()
        return values

    def add(self, ts: int, amount: float) -> None:
        """Record a transaction at or after the newest one."""
        self.events.append((ts, amount))
        for w in range(len(WINDOWS_SECONDS)):
            self.counts[w] += 1
            self.sums[w] += amount
        self.newest = ts

    def late(self, ts: int, amount: float) -> list[float]:
        """An event older than the newest one: count it by scanning (rare), then insert
        it in time order and rebuild the running windows from the sorted events."""
        values: list[float] = []
        for window in WINDOWS_SECONDS:
            recent = [a for t, a in self.events if t > ts - window]
            values += [float(len(recent)), math.log1p(sum(recent))]
        self.events.insert(bisect.bisect_right(self.events, ts, key=_event_time), (ts, amount))
        for w, window in enumerate(WINDOWS_SECONDS):
            inside = [a for t, a in self.events if t > self.newest - window]
            self.counts[w], self.sums[w] = len(inside), math.fsum(inside)
        return values


_HORIZON = max(WINDOWS_SECONDS)


def _event_time(event: tuple[int, float]) -> int:
    return event[0]


class OnlineFeatures:
    """Per-user state for scoring one transaction at a time.

    Holds, for each user, the (timestamp, amount) of transactions within the longest
    window, with running per-window counts and sums. In a consumer group each user's state
    lives in one scorer, since Kafka keys raw_transactions by user_id."""

    def __init__(self) -> None:
        self._history: dict[int, _UserWindows] = {}
        self._last_seen: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._history)

    def transform(self, tx: Mapping) -> np.ndarray:
        """Features of one transaction (a dict with canonical names); updates the state."""
        static = [float(v[0]) for v in _static_features(_static_columns([tx]))]
        return np.asarray(static + self.velocity(tx), dtype=np.float32)

    def velocity(self, tx: Mapping) -> list[float]:
        """The velocity features of one transaction, then record it in the user's state."""
        user, ts, amount = int(tx["user_id"]), int(tx["timestamp"]), float(tx["amount"])
        state = self._history.get(user)
        if state is None:
            state = self._history[user] = _UserWindows()
        if ts >= state.newest:
            values = state.advance(ts)
            state.add(ts, amount)
        else:
            values = state.late(ts, amount)
        last = self._last_seen.get(user)
        # max(.., 0): an event older than the last one seen (out of order) counts as no gap
        gap = MAX_GAP_SECONDS if last is None else min(max(ts - last, 0), MAX_GAP_SECONDS)
        values.append(math.log1p(gap))
        self._last_seen[user] = ts
        return values

    def transform_many(self, txs: list[Mapping]) -> np.ndarray:
        """Features of a micro-batch, in order; static features are vectorised."""
        if not txs:
            return np.zeros((0, N_FEATURES), dtype=np.float32)
        static = static_matrix(txs)
        velocity = np.asarray([self.velocity(tx) for tx in txs], dtype=np.float64)
        return np.hstack([static, velocity]).astype(np.float32)


def static_matrix(txs: Sequence[Mapping]) -> np.ndarray:
    """The per-transaction features of a micro-batch (N, static features), vectorised."""
    return np.column_stack(_static_features(_static_columns(txs)))


def _static_columns(txs: Sequence[Mapping]) -> dict[str, list]:
    """The fields the static features read, as columns; `balances_missing` may be absent
    (a transaction from a producer that knows its balances)."""
    cols = {k: [tx[k] for tx in txs] for k in _STATIC_KEYS}
    cols["balances_missing"] = [tx.get("balances_missing", False) for tx in txs]
    return cols


_STATIC_KEYS = (
    "amount",
    "old_balance_orig",
    "new_balance_orig",
    "old_balance_dest",
    "new_balance_dest",
    "timestamp",
    "type",
    "is_unauthorized_overdraft",
)
