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
A dataset without the column has every balance present.

Location: a transaction's `ip_country` and `ip_kind` come from enriching its IP address
with `fraudops.geoip` before this transform (in the simulator and in the scorer);
`card_country` comes with it. Unknown ("", or a dataset without the columns, such as a
PaySim CSV) is a value of its own: every location feature reads 0 then. Per user, a
`LocationHistory` says whether the user paid from the IP's country before and from how many
countries in the last COUNTRY_WINDOW_SECONDS; the batch transform and the in-memory state
both run it, the Redis state runs the same rule in Lua (redis_location.lua)."""

from __future__ import annotations

import functools
from bisect import bisect_right, insort_right
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
    location: bool = False  # from the IP address and the card's country; see evaluate


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
    Feature("ip_country_known", "whether the IP address's country is known", location=True),
    Feature("ip_card_country_mismatch", "IP country differs from the card's", location=True),
    Feature("ip_not_public", "IP address in a private or reserved range", location=True),
    Feature("tx_count_1h", "transactions by this user in the last hour"),
    Feature("log_amount_sum_1h", "amount sent by this user in the last hour"),
    Feature("tx_count_24h", "transactions by this user in the last 24 hours"),
    Feature("log_amount_sum_24h", "amount sent by this user in the last 24 hours"),
    Feature("log_seconds_since_last", "time since this user's previous transaction"),
    Feature("ip_country_new", "IP country new for this user", location=True),
    Feature(
        "ip_countries_24h", "countries this user paid from in the last 24 hours", location=True
    ),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
BALANCE_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.balance_derived)
LOCATION_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.location)
# The per-user features: velocity, then location (the last columns, in this order).
N_VELOCITY = 2 * len(WINDOWS_SECONDS) + 1
N_LOCATION_STATE = 2
STATE_FEATURES: tuple[str, ...] = FEATURE_NAMES[-(N_VELOCITY + N_LOCATION_STATE) :]
COUNTRY_WINDOW_SECONDS = 86400
MAX_COUNTRIES = 10  # beyond this many countries in a day, more says nothing new
N_FEATURES = len(FEATURES)
_BALANCE_COLUMNS = [FEATURE_NAMES.index(n) for n in BALANCE_FEATURES]
_PRESENT_COLUMN = FEATURE_NAMES.index("balances_present")
_LOCATION_COLUMNS = [FEATURE_NAMES.index(n) for n in LOCATION_FEATURES]


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
    ip_country = _text_column(cols, "ip_country", len(amount))
    card_country = _text_column(cols, "card_country", len(amount))
    ip_kind = _text_column(cols, "ip_kind", len(amount))
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
        (ip_country != "").astype(np.float64),
        ((ip_country != "") & (card_country != "") & (ip_country != card_country)).astype(float),
        ((ip_kind == "private") | (ip_kind == "reserved")).astype(np.float64),
    ]


def _text_column(cols: Mapping[str, np.ndarray], name: str, n: int) -> np.ndarray:
    """A text column as strings, "" (unknown) where missing, NaN or None (a dataset
    without location columns, or a CSV whose empty cells were read as NaN)."""
    column = cols.get(name) if hasattr(cols, "get") else None
    if column is None:
        return np.full(n, "", dtype=object)
    return np.array([v if isinstance(v, str) else "" for v in column], dtype=object)


class LocationHistory:
    """One user's countries: where each was first paid from, and the times of the recent
    events with a known country, per country in time order (a user pays from one or two,
    so counting them is a look at each other country's latest time, not a set built from
    the window's events). `record` is the one location rule (the batch transform and the
    in-memory state call it; redis_location.lua mirrors it): whether the country is new (no
    earlier event from it at or before `ts`) and how many distinct countries are among the
    earlier events in (ts - COUNTRY_WINDOW_SECONDS, ts] and this one. An event without a
    known country gets 0 for both and is not kept."""

    __slots__ = ("first", "oldest", "times")

    def __init__(self) -> None:
        self.first: dict[str, int] = {}
        self.times: dict[str, list[int]] = {}
        self.oldest: int | None = None  # of every kept time: trimming is due when it is old

    def record(self, ts: int, country: str, keep_seconds: int | None = None) -> list[float]:
        """The event's values, then the event recorded; with `keep_seconds`, once the
        oldest kept time is that far behind this one, every kept time at or before that
        is dropped (the first-seen times stay)."""
        if not country:
            return [0.0, 0.0]
        after, count = ts - COUNTRY_WINDOW_SECONDS, 1
        for other, times in self.times.items():
            if other != country:
                last = times[-1]
                if last > ts:  # a late event: the other country's latest at or before it
                    at = bisect_right(times, ts)
                    last = times[at - 1] if at else after
                count += last > after
        first = self.first.get(country)
        if first is None or ts < first:
            self.first[country] = ts
        times = self.times.get(country)
        if times is None:
            self.times[country] = [ts]
        elif ts >= times[-1]:
            times.append(ts)
        else:
            insort_right(times, ts)
        if self.oldest is None or ts < self.oldest:
            self.oldest = ts
        if keep_seconds is not None and self.oldest <= ts - keep_seconds:
            self._trim(ts - keep_seconds)
        return [1.0 if first is None or first > ts else 0.0, float(count)]

    def _trim(self, cutoff: int) -> None:
        for country, times in list(self.times.items()):
            del times[: bisect_right(times, cutoff)]
            if not times:
                del self.times[country]
        self.oldest = min((times[0] for times in self.times.values()), default=None)


def location_features(raw) -> np.ndarray:
    """Raw location values (N, 2: new country, distinct countries) as features: the count
    capped at MAX_COUNTRIES."""
    out = np.asarray(raw, dtype=np.float64).reshape(-1, N_LOCATION_STATE).copy()
    out[:, 1] = np.minimum(out[:, 1], MAX_COUNTRIES)
    return out


def _location_raw(user: np.ndarray, ts: np.ndarray, country: np.ndarray) -> np.ndarray:
    """Raw location values of every row: each user's rows in (timestamp, row order), each
    judged against the rows before it. Rows without a country are skipped quickly."""
    raw = np.zeros((len(user), N_LOCATION_STATE))
    known = np.flatnonzero(country != "")
    order = known[np.lexsort((known, ts[known], user[known]))]
    histories: dict[int, LocationHistory] = {}
    for i in order.tolist():
        history = histories.setdefault(int(user[i]), LocationHistory())
        raw[i] = history.record(int(ts[i]), country[i])
    return raw


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


def mask_location(features: np.ndarray) -> np.ndarray:
    """A copy of `features` with every location feature as the transform gives it to a
    transaction whose location is unknown (all 0): what a producer without IP addresses or
    card countries sends, for the held-out report's ablation."""
    out = np.array(features, copy=True)
    out[:, _LOCATION_COLUMNS] = 0.0
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
    location = location_features(
        _location_raw(user, ts, _text_column(cols, "ip_country", len(user)))
    )
    return np.column_stack([*_static_features(cols), velocity, location]).astype(np.float32)


def static_matrix(txs: Sequence[Mapping]) -> np.ndarray:
    """The per-transaction features of a micro-batch (N, static features), vectorised (one
    array built from the columns: column_stack's per-column work shows on one transaction)."""
    return np.array(_static_features(_static_columns(txs)), dtype=np.float64).T


def _static_columns(txs: Sequence[Mapping]) -> dict[str, list]:
    """The fields the static features read, as columns; `balances_missing` and the
    location fields may be absent (an older producer: balances known, location unknown)."""
    cols = {k: [tx[k] for tx in txs] for k in _STATIC_KEYS}
    cols["balances_missing"] = [tx.get("balances_missing", False) for tx in txs]
    for name in ("ip_country", "ip_kind", "card_country"):
        cols[name] = [tx.get(name, "") for tx in txs]
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
