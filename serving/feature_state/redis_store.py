"""The per-user feature state in Redis, shared by every scoring process: the inline server's
processes and every scorer replica see one history, so a restart, a second process or a
consumer-group rebalance gives the same features. Its semantics are the contract's
(serving.feature_state.contract); the window rule runs inside Redis, in Lua, so that
reading and recording a user's events is one atomic step.

Each user has one key, `<prefix>:h:{user}` (hash-tagged, for a cluster): a string holding
the user's recent events, one line each, "timestamp TAB amount TAB the raw velocity values
it was first scored with TAB transaction_id". One Lua script (redis_store.lua) reads a
micro-batch's users, computes each transaction's velocity values, records it, and writes
each user once: atomic, so two processes scoring the same user at once each count the
other. A user costs one GET and one APPEND + EXPIRE per batch inside the script (a SET when
old events are dropped, about once an hour of event time). A short history (up to
HEAVY_LINES events) is read whole for each transaction; a longer one is kept in time order
behind a fixed-width header holding each window's running count, sum and first event, so a
transaction in time order only steps the windows past the events that left them (late
events read the history whole), and its transaction ids live in a hash beside it
(`<key>:ids`, id -> first values), so a repeat is found without a search; the script is
given both keys of every transaction (a cluster routes by the declared keys). What stays linear
in a long history is copying its bytes once a call (in C). A batch goes to Redis in calls
of at most SCRIPT_ROWS transactions, so no batch holds Redis (and the inline calls waiting
on it) for long. Transaction ids hold no tab or newline (they are validated as printable
text before they get here; a batch that breaks this is refused).

The user's countries live beside the history, on `<key>:geo`, written by a second script
(redis_location.py) sent on the same connection in the same round trip.

Keys expire after TTL_SECONDS of inactivity: by then the user would read as "never seen"
anyway."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from fraudops.features import N_FEATURES, WINDOWS_SECONDS, static_matrix, velocity_features
from serving.feature_state.contract import (
    RETENTION_SECONDS,
    TRIM_SLACK_SECONDS,
    TTL_SECONDS,
    FeatureStateUnavailable,
)
from serving.feature_state.redis_location import location_command, location_of

log = logging.getLogger(__name__)

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

SCRIPT = Path(__file__).with_name("redis_store.lua").read_text()

# Errors that mean "Redis cannot serve now" rather than a bug in the script.
_UNAVAILABLE = ("MISCONF", "OOM", "LOADING", "READONLY", "MASTERDOWN")


def connect(url: str, timeout: float = INLINE_TIMEOUT_SECONDS) -> redis.Redis:
    """A client that fails fast: no client-side retries (the callers decide what to do)."""
    return redis.Redis.from_url(
        url, retry=Retry(NoBackoff(), 0), socket_timeout=timeout, socket_connect_timeout=timeout
    )


class RedisFeatures:
    """The feature state with the per-user history in Redis (see the module docstring)."""

    shared = True  # the state is updated atomically in Redis: callers need no lock

    def __init__(self, client: redis.Redis, prefix: str = "fo"):
        self.client = client
        self.prefix = prefix
        self._sha = hashlib.sha1(SCRIPT.encode()).hexdigest()
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
        raw, places = self._run(txs, lambda: static.append(static_matrix(txs)))
        return np.hstack([static[0], velocity_of(raw), location_of(places)]).astype(np.float32)

    def record(self, txs: Sequence[Mapping]) -> None:
        """Add transactions to the history without computing static features (rebuild)."""
        if txs:
            self._run(txs)

    def is_empty(self) -> bool:
        """Whether no user has any history under this prefix."""
        keys = self.client.scan_iter(match=f"{self.prefix}:h:*", count=1000)
        return next(iter(keys), None) is None

    def _run(
        self, txs: Sequence[Mapping], meanwhile: Callable[[], None] | None = None
    ) -> tuple[list, list]:
        """The velocity and the location scripts' replies for `txs`, in calls of
        SCRIPT_ROWS; `meanwhile()` runs after the first call is sent and before its reply
        is read."""
        if time.monotonic() < self._down_until:
            raise FeatureStateUnavailable("Redis failed moments ago; not retried yet")
        parts = [txs[i : i + SCRIPT_ROWS] for i in range(0, len(txs), SCRIPT_ROWS)]
        raw: list = []
        places: list = []
        try:
            for n, part in enumerate(parts):
                keys, args = self._arguments(part)
                velocity = (self._sha, SCRIPT, keys, args)
                replies = self._call([velocity, location_command(part, self.key_of)],
                                     None if n else meanwhile)  # fmt: skip
                raw += replies[0]
                places += replies[1]
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as err:
            if isinstance(err, redis.ResponseError) and not str(err).startswith(_UNAVAILABLE):
                raise  # a real error in the script or its arguments, not an outage
            self._down_until = time.monotonic() + RETRY_AFTER_SECONDS
            log.warning("feature store unavailable: %s", err)
            raise FeatureStateUnavailable(f"Redis unavailable: {err}") from err
        return raw, places

    def _arguments(self, txs: Sequence[Mapping]) -> tuple[list[str], list]:
        """The script's KEYS and ARGV for `txs`."""
        keys = []
        for tx in txs:
            key = self.key_of(int(tx["user_id"]))
            keys += [key, f"{key}:ids"]
        lines = "".join(
            f"{int(tx['timestamp'])}\t{float(tx['amount'])!r}\t{tx['transaction_id']}\n"
            for tx in txs
        )
        if lines.count("\n") != len(txs) or lines.count("\t") != 2 * len(txs):
            raise ValueError("a transaction_id holds a tab or a newline; ids must be printable")
        return keys, [*self._fixed_args, lines]

    def _call(self, commands: list[tuple], meanwhile: Callable[[], None] | None) -> list:
        """EVALSHA of each (sha, script, keys, args) on one pooled connection, all sent
        before any reply is read, so that `meanwhile` runs in between; EVAL (which also
        caches the script) for each Redis has not seen, as after a restart. A connection
        left with an unread reply is closed."""
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            for sha, _script, keys, args in commands:
                conn.send_command("EVALSHA", sha, len(keys), *keys, *args)
            if meanwhile is not None:
                meanwhile()
            replies: list = []
            for _sha, script, keys, args in commands:
                try:
                    replies.append(conn.read_response())
                except NoScriptError:
                    replies.append((script, keys, args))  # sent again below, in order
            for n, reply in enumerate(replies):
                if isinstance(reply, tuple):
                    script, keys, args = reply
                    conn.send_command("EVAL", script, len(keys), *keys, *args)
                    replies[n] = conn.read_response()
            return replies
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)


def velocity_of(raw: Sequence[bytes]) -> np.ndarray:
    """The script's replies ("count sum" per window, then the gap, -1 for none) as
    velocity features."""
    return velocity_features(
        np.array(b" ".join(raw).split(), dtype=np.float64).reshape(len(raw), -1)
    )
