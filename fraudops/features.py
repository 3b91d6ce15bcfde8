"""The one feature transform. `batch_features` (vectorised, for featurize) computes every
feature of a dataset; the per-user feature states of the scorer (serving.feature_state)
compute the same numbers one transaction at a time, and a test suite holds them to it.
Feature names and order live here only, and so do the velocity window rule
(`window_sums`) and how raw velocity values become features (`velocity_features`).

Velocity features count a user's *earlier* transactions in a window ending at the current
one. The batch transform orders each user's rows by (timestamp, row order), which is the
order an online scorer sees them when events arrive in time order.

Balances are optional: a row whose `balances_missing` is true (a card payment carries no
account balances) gets 0 in every balance-derived feature and 0 in `balances_present`, so
the model is told the balances are unknown instead of reading zeros as a drained account.
A dataset without the column has every balance present."""

from __future__ import annotations

import functools
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


def window_sums(times, prefix, at, ts, search) -> list:
    """Per window, the count and amount sum of the events before position `at` in `times`
    (ascending) whose time is in (ts - window, ts]: the one window rule of every feature
    state. `prefix[k]` is the sum of the first k amounts; `search(times, t)` is a right
    bisection. The batch transform passes whole arrays (one sorted key per row,
    `np.searchsorted`), the in-memory state one user's history and one event (`bisect`):
    the same arithmetic either way. Every event before `at` is at or before `ts`, so only
    the window's start needs a search."""
    out = []
    for window in WINDOWS_SECONDS:
        first = search(times, ts - window)
        out += [at - first, prefix[at] - prefix[first]]
    return out


def velocity_features(raw) -> np.ndarray:
    """Raw velocity values (N, 2 * windows + 1: count and amount sum per window, then the
    seconds since the previous event, negative for none) as features: log sums (a sum below
    zero, from float rounding, reads as zero) and the log gap, capped at MAX_GAP_SECONDS
    ("never seen" reads as the cap). Every feature state reports raw values through this."""
    raw = np.asarray(raw, dtype=np.float64)
    out = raw.copy()
    out[:, 1:-1:2] = np.log1p(np.maximum(raw[:, 1:-1:2], 0.0))
    gap = raw[:, -1]
    out[:, -1] = np.log1p(np.where(gap < 0, MAX_GAP_SECONDS, np.minimum(gap, MAX_GAP_SECONDS)))
    return out


def _velocity_raw(user: np.ndarray, ts: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Raw velocity values of every row (see `velocity_features`): each user's rows in
    (timestamp, row order), each counting the rows before it."""
    n = len(user)
    _, rank = np.unique(user, return_inverse=True)
    order = np.lexsort((np.arange(n), ts, rank))
    # One sorted key per row: rows of one user are contiguous, in time order.
    key = rank[order].astype(np.int64) * (1 << 34) + ts[order]
    prefix = np.concatenate(([0.0], np.cumsum(amount[order])))
    search = functools.partial(np.searchsorted, side="right")
    sorted_raw = window_sums(key, prefix, np.arange(n), key, search)
    gap = np.full(n, -1.0)
    same_user = rank[order][1:] == rank[order][:-1]
    gap[1:] = np.where(same_user, np.diff(ts[order]), -1.0)
    raw = np.empty((n, len(sorted_raw) + 1))
    raw[order] = np.column_stack([*sorted_raw, gap])
    return raw


def batch_features(cols: Mapping[str, np.ndarray]) -> np.ndarray:
    """Features for a whole dataset (a DataFrame or a dict of columns) as float32 (N, F)."""
    user = np.asarray(cols["user_id"], dtype=np.int64)
    ts = np.asarray(cols["timestamp"], dtype=np.int64)
    amount = np.asarray(cols["amount"], dtype=np.float64)
    if len(user) == 0:
        return np.zeros((0, N_FEATURES), dtype=np.float32)
    velocity = velocity_features(_velocity_raw(user, ts, amount))
    return np.column_stack([*_static_features(cols), velocity]).astype(np.float32)


def static_matrix(txs: Sequence[Mapping]) -> np.ndarray:
    """The per-transaction features of a micro-batch (N, static features), vectorised (one
    array built from the columns: column_stack's per-column work shows on one transaction)."""
    return np.array(_static_features(_static_columns(txs)), dtype=np.float64).T


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
