"""Per-user online feature state in Redis, shared by every scoring process.

`RedisFeatures` has the interface of `fraudops.features.OnlineFeatures` (`transform`,
`transform_many`), so the scoring core takes either. The difference is where the history
lives: one Redis for the inline server's processes and every scorer replica, so a restart,
a second process or a consumer-group rebalance sees the same history and gives the same
features.

Each user has one key, `<prefix>:h:{user}` (hash-tagged, for a cluster): a string holding
the user's recent events, one line each, "timestamp TAB amount TAB the velocity features it
was first scored with TAB transaction_id". One Lua script (feature_store.lua) reads a
micro-batch's users, computes each transaction's velocity features, records it, and writes
each user once: atomic, so two processes scoring the same user at once each count the
other. A user costs one GET and one APPEND + EXPIRE per batch inside the script (a SET when
old events are dropped, about once an hour of event time). A short history (up to
HEAVY_LINES events) is read whole for each transaction; a longer one is kept in time order
behind a fixed-width header holding each window's running count, sum and first event, so a
transaction in time order only steps the windows past the events that left them, as
`OnlineFeatures` does (late events read the history whole), and its transaction ids live in
a hash beside it (`<key>:ids`, id -> first features), so a repeat is found without a search.
What stays linear in a long history is copying its bytes once a call (in C): at ~700 kept
events a user, ~22 µs a transaction in 2,000-row batches against ~330 µs when every history
was read whole. A batch goes to Redis in calls of at most SCRIPT_ROWS transactions, so no
batch holds Redis (and the inline calls waiting on it) for long. A sorted set per user
(the first layout, `<prefix>:{user}`, not read any more; its keys expire on their own) cost
1.2-1.4x as much inside Redis. Transaction ids hold no tab or newline (they are validated as
printable text before they get here; a batch that breaks this is refused).

The features of a transaction are those `batch_features` gives it over the stream seen so
far: windows count earlier events with a timestamp in (ts - window, ts], ties included,
and the gap is to the latest earlier event at or before ts. In time order that is exactly
the batch transform. A late event (older than the user's newest) is counted against the
events before it in time, and the events after it count it once they come; up to
LATENESS_SECONDS late this is exact, since the history keeps that much beyond the longest
window. A transaction_id seen before gets the features of its first scoring and is not
counted again (redelivery, retry, or inline then Kafka), for as long as its event is kept.

Keys expire after the longest window plus MAX_GAP_SECONDS of inactivity: by then the
user would read as "never seen" anyway."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from fraudops.features import MAX_GAP_SECONDS, N_FEATURES, WINDOWS_SECONDS, static_matrix

log = logging.getLogger(__name__)

LATENESS_SECONDS = 86400  # how late an event may be and still get exact batch features
RETENTION_SECONDS = max(WINDOWS_SECONDS) + LATENESS_SECONDS
TTL_SECONDS = max(WINDOWS_SECONDS) + MAX_GAP_SECONDS
# Events older than the retention are dropped once the oldest is this much older still: a
# user's history is rewritten about once an hour of event time, and otherwise appended to.
TRIM_SLACK_SECONDS = 3600
# How long a call may wait on Redis, by default: the inline path answers without history
# rather than wait longer; the stream scorer passes a longer one for its large batches.
# The URL's query string overrides it (`?socket_timeout=0.5`).
INLINE_TIMEOUT_SECONDS = 0.25
# A history longer than this many events keeps a running window state (see the script);
# shorter, reading it whole is cheaper than keeping the state.
HEAVY_LINES = 32
HEADER_WIDTH = 32 + 64 * len(WINDOWS_SECONDS)
# Transactions per script call: a call holds Redis for ~1.5 ms of short histories, ~5 ms of
# histories of ~700 events.
SCRIPT_ROWS = 250
# After a failure, calls fail fast for this long instead of each waiting out a timeout.
RETRY_AFTER_SECONDS = 0.5
NO_HISTORY = [0.0] * (2 * len(WINDOWS_SECONDS)) + [math.log1p(MAX_GAP_SECONDS)]

_SCRIPT = Path(__file__).with_name("feature_store.lua").read_text()

# Errors that mean "Redis cannot serve now" rather than a bug in the script.
_UNAVAILABLE = ("MISCONF", "OOM", "LOADING", "READONLY", "MASTERDOWN")


class FeatureStateUnavailable(RuntimeError):
    """The shared feature state could not be read or updated; nothing was recorded."""


def connect(url: str, timeout: float = INLINE_TIMEOUT_SECONDS) -> redis.Redis:
    """A client that fails fast: no client-side retries (the callers decide what to do)."""
    return redis.Redis.from_url(
        url, retry=Retry(NoBackoff(), 0), socket_timeout=timeout, socket_connect_timeout=timeout
    )


class RedisFeatures:
    """Online features with the per-user history in Redis (see the module docstring)."""

    shared = True  # the state is updated atomically in Redis: callers need no lock

    def __init__(self, client: redis.Redis, prefix: str = "fo"):
        self.client = client
        self.prefix = prefix
        self._sha = hashlib.sha1(_SCRIPT.encode()).hexdigest()
        windows = sorted(WINDOWS_SECONDS)
        fixed = [RETENTION_SECONDS, TRIM_SLACK_SECONDS, TTL_SECONDS, HEAVY_LINES, HEADER_WIDTH]
        self._fixed_args = [*fixed, len(windows), *windows]
        self._down_until = 0.0

    @classmethod
    def from_url(
        cls, url: str, prefix: str = "fo", timeout: float = INLINE_TIMEOUT_SECONDS
    ) -> RedisFeatures:
        return cls(connect(url, timeout), prefix)

    def key_of(self, user_id: int) -> str:
        return f"{self.prefix}:h:{{{user_id}}}"

    def history(self, user_id: int) -> list[tuple[str, int, float]]:
        """A user's recorded (transaction_id, timestamp, amount), in time order."""
        text = (self.client.get(self.key_of(user_id)) or b"").decode()
        if text.startswith("#"):
            text = text[HEADER_WIDTH:]  # a long history's window state
        out = []
        for line in text.splitlines():
            ts, amount, _features, tx_id = line.split("\t", 3)
            out.append((tx_id, int(ts), float(amount)))
        return sorted(out, key=lambda event: event[1])

    def transform(self, tx: Mapping) -> np.ndarray:
        """Features of one transaction; records it in the user's history."""
        return self.transform_many([tx])[0]

    def transform_many(self, txs: Sequence[Mapping]) -> np.ndarray:
        """Features of a micro-batch, in order, in one round trip to Redis per SCRIPT_ROWS
        transactions (a part already recorded if a later one fails gives the same features
        when the batch is retried: the store is idempotent by transaction_id). The static
        features are computed while Redis runs the script: the round trip is mostly
        waiting (on a VM, waking the other core), and the wait hides that work."""
        if not txs:
            return np.zeros((0, N_FEATURES), dtype=np.float32)
        static: list[np.ndarray] = []
        raw = self._run(txs, lambda: static.append(static_matrix(txs)))
        return np.hstack([static[0], velocity_of(raw)]).astype(np.float32)

    def record(self, txs: Sequence[Mapping]) -> None:
        """Add transactions to the history without computing static features (rebuild)."""
        if txs:
            self._run(txs)

    def is_empty(self) -> bool:
        """Whether no user has any history under this prefix."""
        keys = self.client.scan_iter(match=f"{self.prefix}:h:*", count=1000)
        return next(iter(keys), None) is None

    def _run(self, txs: Sequence[Mapping], meanwhile: Callable[[], None] | None = None) -> list:
        """The script's replies for `txs`, in calls of SCRIPT_ROWS; `meanwhile()` runs
        after the first call is sent and before its reply is read."""
        if time.monotonic() < self._down_until:
            raise FeatureStateUnavailable("Redis failed moments ago; not retried yet")
        parts = [self._arguments(txs[i : i + SCRIPT_ROWS]) for i in range(0, len(txs), SCRIPT_ROWS)]
        raw: list = []
        try:
            for n, (keys, args) in enumerate(parts):
                raw += self._call(keys, args, None if n else meanwhile)
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as err:
            if isinstance(err, redis.ResponseError) and not str(err).startswith(_UNAVAILABLE):
                raise  # a real error in the script or its arguments, not an outage
            self._down_until = time.monotonic() + RETRY_AFTER_SECONDS
            log.warning("feature store unavailable: %s", err)
            raise FeatureStateUnavailable(f"Redis unavailable: {err}") from err
        return raw

    def _arguments(self, txs: Sequence[Mapping]) -> tuple[list[str], list]:
        """The script's KEYS and ARGV for `txs`."""
        keys = [self.key_of(int(tx["user_id"])) for tx in txs]
        lines = "".join(
            f"{int(tx['timestamp'])}\t{float(tx['amount'])!r}\t{tx['transaction_id']}\n"
            for tx in txs
        )
        if lines.count("\n") != len(txs) or lines.count("\t") != 2 * len(txs):
            raise ValueError("a transaction_id holds a tab or a newline; ids must be printable")
        return keys, [*self._fixed_args, lines]

    def _call(self, keys: list[str], args: list, meanwhile: Callable[[], None] | None) -> list:
        """EVALSHA on a pooled connection, split into send and read so that `meanwhile`
        runs in between; EVAL (which also caches the script) when Redis has not seen it,
        as after a restart. A connection left with an unread reply is closed."""
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_command("EVALSHA", self._sha, len(keys), *keys, *args)
            if meanwhile is not None:
                meanwhile()
            try:
                return conn.read_response()
            except NoScriptError:
                conn.send_command("EVAL", _SCRIPT, len(keys), *keys, *args)
                return conn.read_response()
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)


def velocity_of(raw: Sequence[bytes]) -> np.ndarray:
    """The script's replies as velocity features (N, 2 * windows + 1): counts, log sums
    (a sum below zero, from float rounding, reads as zero), log gap (none: never seen)."""
    values = np.array(b" ".join(raw).split(), dtype=np.float64).reshape(len(raw), -1)
    out = np.empty_like(values)
    for w in range(len(WINDOWS_SECONDS)):
        out[:, 2 * w] = values[:, 2 * w]
        out[:, 2 * w + 1] = np.log1p(np.maximum(values[:, 2 * w + 1], 0.0))
    gap = values[:, -1]
    out[:, -1] = np.log1p(np.where(gap < 0, MAX_GAP_SECONDS, np.minimum(gap, MAX_GAP_SECONDS)))
    return out


def features_without_history(txs: Sequence[Mapping]) -> np.ndarray:
    """Features of transactions as if their users had never been seen: the answer the
    inline path gives when the shared state is unreachable."""
    velocity = np.tile(np.asarray(NO_HISTORY), (len(txs), 1))
    return np.hstack([static_matrix(txs), velocity]).astype(np.float32)
