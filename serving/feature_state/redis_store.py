"""The per-user feature state in Redis, shared by every scoring process: the inline server's
processes and every scorer replica see one history, so a restart, a second process or a
consumer-group rebalance gives the same features. Its semantics are the contract's
(serving.feature_state.contract); the window rule runs inside Redis, in Lua, so that
reading and recording a user's events is one atomic step.

Each user has one key, `<prefix>:h:{p<partition>}:<user>`: a string holding
the user's recent events, one line each, "timestamp TAB amount TAB the raw velocity values
it was first scored with TAB transaction_id". The hash tag is the user's Kafka partition of
`raw_transactions` as the producers place it (Kafka's default partitioner: murmur2 of the
key, the user id in decimal, modulo `raw_partitions`), so on a Redis Cluster a scorer's
micro-batch from one partition is one slot, and every process (the inline server too) finds
a user at the same key. One Lua script (redis_store.lua) reads a
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
of at most SCRIPT_ROWS transactions of one slot, so no batch holds Redis (and the inline
calls waiting on it) for long; the calls of different nodes of a cluster are sent before
any reply is read, so a batch costs one round trip per SCRIPT_ROWS transactions of the
busiest node, whatever the number of users or nodes. On a cluster each call is followed by
WAIT for the slot's replica, so what a scorer commits survives its master's failover.
Transaction ids hold no tab or newline (they are validated as printable
text before they get here; a batch that breaks this is refused).

The user's countries live beside the history, on `<key>:geo` (the same hash tag, so the
same slot), written by a second script (redis_location.py) sent in the same call.

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
from redis.cluster import RedisCluster
from redis.connection import Connection, ConnectionPool
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, NoScriptError, TryAgainError
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

# Errors that mean "Redis cannot serve now" rather than a bug in the script: a node down,
# a slot moving or without a master (a cluster's failover).
_UNAVAILABLE = ("MISCONF", "OOM", "LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN")
_MOVING = (AskError, TryAgainError, ClusterDownError)
CLUSTER_SCHEME = "redis+cluster://"
# How long a cluster call waits for its slot's replica to confirm the write (WAIT).
REPLICA_WAIT_MS = 200


def connect(url: str, timeout: float = INLINE_TIMEOUT_SECONDS) -> redis.Redis | RedisCluster:
    """A client that fails fast: no client-side retries (the callers decide what to do).
    `redis+cluster://host:port` names a Redis Cluster by one of its nodes: the client is
    cluster-aware (it learns the slots' masters and replicas from that node)."""
    common = {"retry": Retry(NoBackoff(), 0), "socket_timeout": timeout,
              "socket_connect_timeout": timeout}  # fmt: skip
    if url.startswith(CLUSTER_SCHEME):
        return RedisCluster.from_url("redis://" + url.removeprefix(CLUSTER_SCHEME), **common)
    return redis.Redis.from_url(url, **common)


def partition_of(user_id: int, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a message keyed by this user (the
    producers key by the user id in decimal: murmur2, sign bit cleared, modulo)."""
    return (murmur2(str(user_id).encode()) & 0x7FFFFFFF) % partitions


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (org.apache.kafka.common.utils.Utils.murmur2), as a signed int."""
    m, length = 0x5BD1E995, len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    end = length - length % 4
    for i in range(0, end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = data[end:]
    if rest:
        h ^= int.from_bytes(rest, "little")
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


class RedisFeatures:
    """The feature state with the per-user history in Redis (see the module docstring)."""

    shared = True  # the state is updated atomically in Redis: callers need no lock

    def __init__(self, client: redis.Redis | RedisCluster, prefix: str = "fo", partitions: int = 3):
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1, got {partitions}")
        self.client = client
        self.prefix = prefix
        self.partitions = partitions
        self.cluster = isinstance(client, RedisCluster)
        self._sha = hashlib.sha1(SCRIPT.encode()).hexdigest()
        windows = sorted(WINDOWS_SECONDS)
        fixed = [RETENTION_SECONDS, TRIM_SLACK_SECONDS, TTL_SECONDS, HEAVY_LINES, HEADER_WIDTH]
        self._fixed_args = [*fixed, len(windows), *windows]
        self._down_until = 0.0
        self._stale_slots = False

    @classmethod
    def from_url(
        cls,
        url: str,
        prefix: str = "fo",
        timeout: float = INLINE_TIMEOUT_SECONDS,
        partitions: int = 3,
    ) -> RedisFeatures:
        return cls(connect(url, timeout), prefix, partitions)

    def key_of(self, user_id: int) -> str:
        return f"{self.prefix}:h:{{p{partition_of(user_id, self.partitions)}}}:{user_id}"

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
        """Features of a micro-batch, in order (a part already recorded if a later one fails
        gives the same features when the batch is retried: the store is idempotent by
        transaction_id). The static features are computed while Redis runs the script: the
        round trip is mostly waiting (on a VM, waking the other core), and the wait hides
        that work."""
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
        """Whether no user has any history under this prefix (on every master of a cluster)."""
        keys = self.client.scan_iter(match=f"{self.prefix}:h:*", count=1000)
        return next(iter(keys), None) is None

    def _run(
        self, txs: Sequence[Mapping], meanwhile: Callable[[], None] | None = None
    ) -> tuple[list, list]:
        """The velocity and the location scripts' replies for `txs`, in their order: calls
        of at most SCRIPT_ROWS transactions of one slot, in rounds (a round sends one call
        to every node that has one left, then reads the replies); `meanwhile()` runs while
        the first round is out."""
        if time.monotonic() < self._down_until:
            raise FeatureStateUnavailable("Redis failed moments ago; not retried yet")
        raw: list = [None] * len(txs)
        places: list = [None] * len(txs)
        try:
            queues = self._calls_by_node(txs)
            while queues:
                sent = [(pool, call, self._send(pool, call)) for pool, call in _pop_round(queues)]
                if meanwhile is not None:
                    meanwhile()
                    meanwhile = None
                for pool, call, conn in sent:
                    replies, located = self._receive(pool, conn, call)
                    for row, reply, place in zip(call[0], replies, located, strict=True):
                        raw[row], places[row] = reply, place
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, *_MOVING) as err:
            if _script_error(err):
                raise  # a real error in the script or its arguments, not an outage
            self._down_until = time.monotonic() + RETRY_AFTER_SECONDS
            self._stale_slots = self.cluster  # a failover may have moved the slots' masters
            log.warning("feature store unavailable: %s", err)
            raise FeatureStateUnavailable(f"Redis unavailable: {err!r}") from err
        return raw, places

    def _calls_by_node(self, txs: Sequence[Mapping]) -> list[list[tuple]]:
        """Per node, its calls in order: (rows of `txs`, KEYS, ARGV, replicas to WAIT for,
        the location script's (sha, script, KEYS, ARGV)).
        A user's transactions stay in one slot's calls, in their order."""
        keys = [self.key_of(int(tx["user_id"])) for tx in txs]
        groups: dict[object, list[int]] = {}
        for row, key in enumerate(keys):
            groups.setdefault(key_slot(key.encode()) if self.cluster else None, []).append(row)
        by_node: dict[object, list[tuple]] = {}
        for slot, rows in groups.items():
            pool, replicas = self._route(slot)
            for i in range(0, len(rows), SCRIPT_ROWS):
                part = rows[i : i + SCRIPT_ROWS]
                rows_txs = [txs[r] for r in part]
                call = (part, *self._arguments(rows_txs, [keys[r] for r in part]))
                place = location_command(rows_txs, self.key_of)
                by_node.setdefault(pool, [pool]).append((*call, replicas, place))
        return list(by_node.values())

    def _route(self, slot: int | None) -> tuple[ConnectionPool, int]:
        """The connection pool of the slot's master and how many replicas it has."""
        if slot is None:
            return self.client.connection_pool, 0
        nodes = self.client.nodes_manager
        if self._stale_slots:
            nodes.initialize()
            self._stale_slots = False
        node = nodes.get_node_from_slot(slot)
        replicas = min(1, len(nodes.slots_cache.get(slot, [])) - 1)
        return self.client.get_redis_connection(node).connection_pool, replicas

    def _arguments(
        self, txs: Sequence[Mapping], keys: Sequence[str] | None = None
    ) -> tuple[list[str], list]:
        """The script's KEYS and ARGV for `txs` (whose history keys are `keys`, when known)."""
        declared = []
        for key in keys or [self.key_of(int(tx["user_id"])) for tx in txs]:
            declared += [key, f"{key}:ids"]
        lines = "".join(
            f"{int(tx['timestamp'])}\t{float(tx['amount'])!r}\t{tx['transaction_id']}\n"
            for tx in txs
        )
        if lines.count("\n") != len(txs) or lines.count("\t") != 2 * len(txs):
            raise ValueError("a transaction_id holds a tab or a newline; ids must be printable")
        return declared, [*self._fixed_args, lines]

    def _send(self, pool: ConnectionPool, call: tuple) -> Connection:
        """EVALSHA of both scripts (then WAIT for the replica, on a cluster) on a pooled
        connection."""
        _rows, keys, args, replicas, (place_sha, _script, place_keys, place_args) = call
        conn = pool.get_connection()
        try:
            commands = [
                ("EVALSHA", self._sha, len(keys), *keys, *args),
                ("EVALSHA", place_sha, len(place_keys), *place_keys, *place_args),
            ]
            if replicas:
                commands.append(("WAIT", replicas, REPLICA_WAIT_MS))
            conn.send_packed_command(conn.pack_commands(commands))
        except BaseException:
            conn.disconnect()
            pool.release(conn)
            raise
        return conn

    def _receive(self, pool, conn, call: tuple) -> tuple[list, list]:
        """The replies of both scripts of a call sent by `_send`; EVAL (which also caches
        the script) for each Redis has not seen, as after a restart or a failover. A write
        its replica did not confirm is an outage (retried: idempotent). A connection left
        with an unread reply is closed."""
        _rows, keys, args, replicas, (_sha, place_script, place_keys, place_args) = call
        scripts = [(SCRIPT, keys, args), (place_script, place_keys, place_args)]
        try:
            replies = [_read_script_reply(conn) for _ in scripts]
            confirmed = conn.read_response() if replicas else 0
            missing = [n for n, reply in enumerate(replies) if reply is None]
            if missing:
                commands = [("EVAL", scripts[n][0], len(scripts[n][1]), *scripts[n][1],
                             *scripts[n][2]) for n in missing]  # fmt: skip
                if replicas:
                    commands.append(("WAIT", replicas, REPLICA_WAIT_MS))
                conn.send_packed_command(conn.pack_commands(commands))
                for n in missing:
                    replies[n] = conn.read_response()
                confirmed = conn.read_response() if replicas else 0
            if confirmed < replicas:
                raise redis.TimeoutError(f"the slot's replica did not confirm the write in "
                                         f"{REPLICA_WAIT_MS} ms")  # fmt: skip
            return replies[0], replies[1]
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)


def _read_script_reply(conn) -> list | None:
    """A script's reply, or None when Redis did not know the script (NOSCRIPT)."""
    try:
        return conn.read_response()
    except NoScriptError:
        return None


def _script_error(err: Exception) -> bool:
    """Whether Redis refused the call itself, rather than being unable to serve now."""
    if not isinstance(err, redis.ResponseError) or isinstance(err, _MOVING):
        return False
    return not str(err).startswith(_UNAVAILABLE)


def _pop_round(queues: list[list[tuple]]) -> list[tuple]:
    """The next call of every node (each queue is [pool, call, call, ...]); drained queues
    are removed."""
    out = [(queue[0], queue.pop(1)) for queue in queues]
    queues[:] = [queue for queue in queues if len(queue) > 1]
    return out


def velocity_of(raw: Sequence[bytes]) -> np.ndarray:
    """The script's replies ("count sum" per window, then the gap, -1 for none) as
    velocity features."""
    return velocity_features(
        np.array(b" ".join(raw).split(), dtype=np.float64).reshape(len(raw), -1)
    )
