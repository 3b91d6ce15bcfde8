"""Postgres writes of the scoring service: score rows, model deployments, audit entries.

Score rows go in bulk: COPY into a per-connection temporary table, then one
`INSERT ... SELECT ... ON CONFLICT (transaction_id) DO NOTHING`, so a redelivered message
is written once and a batch of thousands costs two statements. A row the database refuses
for what it holds (a data or integrity error) is isolated by halving the batch, so it never
takes its neighbours down; a lost connection is retried and never blamed on a row.
Inline scores are handed to `InlineScoreSink`, a background thread that writes them in
micro-batches, so the request path never waits on the database, and that drains completely
on shutdown; what it cannot store goes to the inline dead-letter topic."""

from __future__ import annotations

import bisect
import collections
import csv
import io
import itertools
import json
import logging
import os
import queue
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extras
from confluent_kafka import Producer

from fraudops.db import connect
from fraudops.db.audit import append_audit
from fraudops.pii import mask_pii
from fraudops.processes import process_alive
from fraudops.schema import NUMERIC_COLUMNS
from serving import metrics
from serving.model_store import LoadedModel
from serving.scoring import ScoredBatch

log = logging.getLogger(__name__)

SCORE_COLUMNS = (
    "transaction_id",
    "user_id",
    "event_ts",
    "type",
    *NUMERIC_COLUMNS,
    "dest_id",
    "channel",
    "score",
    "band",
    "model_version",
    "reasons",
    "latency_us",
    "source",
    "decided_by",
    "shadow_rules",
    "rules_version",
    "ip_country",
    "ip_kind",
    "card_country",
    "billing_country",
    "ip_hash",
)
_COLS = ", ".join(SCORE_COLUMNS)
_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS score_stage "
    "(LIKE scored_transactions INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_COPY = f"COPY score_stage ({_COLS}) FROM STDIN WITH (FORMAT csv)"
_MERGE = (
    f"INSERT INTO scored_transactions ({_COLS}) SELECT {_COLS} FROM score_stage "
    "ON CONFLICT (transaction_id) DO NOTHING"
)
# A lost connection or a server going away: retried, never blamed on a row.
RETRYABLE = (psycopg2.OperationalError, psycopg2.InterfaceError)
# The sampled feature vectors, kept only for rows the table holds (a refused row has none).
_SAMPLES = (
    "INSERT INTO feature_samples (transaction_id, features, model_version) "
    "SELECT v.id, v.features, v.version FROM (VALUES %s) AS v (id, features, version) "
    "WHERE EXISTS (SELECT 1 FROM scored_transactions s WHERE s.transaction_id = v.id) "
    "ON CONFLICT (transaction_id) DO NOTHING"
)
_SAMPLE_SCALE = 1 << 32
# Reasons are flat lists of strings: no cycle check needed, which makes encoding ~25% cheaper.
_reasons_json = json.JSONEncoder(check_circular=False, separators=(",", ":")).encode


def _rows(batch: ScoredBatch, source: str) -> Iterator[tuple]:
    """The scored_transactions rows of one batch, in SCORE_COLUMNS order."""
    version, latency, rules = batch.model.version, batch.latency_us, batch.rules_version
    shadow = batch.shadow or itertools.repeat(None)
    for tx, score, band, reasons, decided_by, matched in zip(
        batch.txs, batch.scores.tolist(), batch.band_names(), batch.reasons, batch.deciders(),
        shadow, strict=False,
    ):  # fmt: skip
        yield (
            tx["transaction_id"], tx["user_id"], tx["timestamp"], tx["type"], tx["amount"],
            *_balances(tx), tx["dest_id"],
            tx["channel"], score, band, version, _reasons_json(reasons), latency, source,
            decided_by, _text_array(matched), rules, *_location(tx),
        )  # fmt: skip


def _location(tx) -> tuple:
    """The location columns: what enrichment derived from the address (never the address),
    and the countries the producer sent; unknown is NULL (an older producer: all of them)."""
    kind = tx.get("ip_kind")
    return (
        tx.get("ip_country") or None, None if kind == "unknown" else kind,
        tx.get("card_country") or None, tx.get("billing_country") or None,
        tx.get("ip_hash") or None,
    )  # fmt: skip


def _text_array(names: list[str] | None) -> str | None:
    """Rule names (lower-case letters, digits, _) as a Postgres array literal; None: NULL."""
    return "{" + ",".join(names) + "}" if names else None


_NO_BALANCES = (None,) * 5


def _balances(tx) -> tuple:
    """The balance columns of a row: NULL (unknown) when the producer has no balances."""
    if tx.get("balances_missing"):
        return _NO_BALANCES
    return (
        tx["old_balance_orig"], tx["new_balance_orig"], tx["old_balance_dest"],
        tx["new_balance_dest"], tx["is_unauthorized_overdraft"],
    )  # fmt: skip


def sampled(transaction_id: str, rate: float) -> bool:
    """Is this transaction in the feature sample? A hash of its id, so the choice is the
    same in every process and on a redelivery."""
    return zlib.crc32(transaction_id.encode("utf-8", "replace")) < rate * _SAMPLE_SCALE


def feature_samples(batches: list[tuple[ScoredBatch, str]], rate: float) -> list[tuple]:
    """(transaction_id, features, model_version) of the sampled rows scored with history."""
    out = []
    for batch, _ in batches:
        if batch.features is None or rate <= 0:
            continue
        for tx, row in zip(batch.txs, batch.features, strict=True):
            if sampled(tx["transaction_id"], rate):
                out.append((tx["transaction_id"], row.astype(float).tolist(), batch.model.version))
    return out


def _csv(rows: list[tuple]) -> io.StringIO:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    buf.seek(0)
    return buf


def score_csv(batches: list[tuple[ScoredBatch, str]]) -> tuple[io.StringIO, int]:
    """The rows of scored batches as CSV for COPY (an empty channel is stored as NULL)."""
    rows = [row for batch, source in batches for row in _rows(batch, source)]
    return _csv(rows), len(rows)


@dataclass(frozen=True)
class RefusedRow:
    """A row the database refused for what it holds; `batch` and `row` index the batches
    given to ScoreWriter.write, `reason` is the database's own message."""

    batch: int
    row: int
    reason: str


@dataclass
class WriteResult:
    inserted: int  # rows new to the table (a redelivered row is not)
    refused: list[RefusedRow] = field(default_factory=list)


def refusal(err: Exception) -> str | None:
    """Why the database refused the data itself (SQLSTATE classes 22 data exception and
    23 integrity violation, or text that cannot be sent as UTF-8); None for anything else
    (a lost connection, a server in trouble, a bug), which must not be blamed on a row."""
    if isinstance(err, UnicodeEncodeError):
        return f"not valid UTF-8 ({err.reason})"
    code = getattr(err, "pgcode", None) or ""
    if isinstance(err, psycopg2.Error) and code[:2] in ("22", "23"):
        return f"database refused the row ({code}): {err.diag.message_primary}"
    return None


class ScoreWriter:
    """Writes score rows idempotently over one connection, reconnecting when it drops.

    A row the database refuses is isolated by halving the rows until it stands alone;
    every other row is written and the caller decides where the refused one goes."""

    def __init__(self, database_url: str, attempts: int = 5, sample_rate: float = 0.0):
        self._url = database_url
        self._attempts = attempts
        self._sample_rate = sample_rate
        self._conn = None

    def _connection(self):
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._url)
            with self._conn, self._conn.cursor() as cur:
                cur.execute(_STAGE)
        return self._conn

    def write(self, batches: list[tuple[ScoredBatch, str]]) -> WriteResult:
        """Write (batch, source) pairs; returns the rows new to the table and the rows the
        database refused. Retries a dropped connection; such errors propagate at the end."""
        rows = [row for batch, source in batches for row in _rows(batch, source)]
        if not rows:
            return WriteResult(0)
        inserted, refused = self._isolating(rows, 0, len(rows))
        self._write_samples(feature_samples(batches, self._sample_rate))
        starts = list(itertools.accumulate((len(b) for b, _ in batches), initial=0))
        result = WriteResult(inserted)
        for i, reason in refused:
            b = bisect.bisect_right(starts, i) - 1
            result.refused.append(RefusedRow(b, i - starts[b], reason))
        lost = collections.Counter(r.batch for r in result.refused)
        for b, (batch, source) in enumerate(batches):
            metrics.PERSISTED.labels(source=source).inc(len(batch) - lost[b])
        return result

    def _isolating(self, rows: list[tuple], lo: int, hi: int) -> tuple[int, list]:
        """Write rows[lo:hi] in one transaction; if the data is refused, each half on its
        own, down to the single row: (rows inserted, [(index, reason)] refused)."""
        try:
            return self._copy(rows[lo:hi]), []
        except (psycopg2.Error, UnicodeEncodeError) as err:
            reason = refusal(err)
            if reason is None:
                raise
            if hi - lo == 1:
                return 0, [(lo, reason)]
        mid = (lo + hi) // 2
        first, refused_first = self._isolating(rows, lo, mid)
        second, refused_second = self._isolating(rows, mid, hi)
        return first + second, refused_first + refused_second

    def _copy(self, rows: list[tuple]) -> int:
        """COPY the rows and merge them, retrying a dropped connection with backoff."""
        data = _csv(rows).getvalue().encode("utf-8")  # a refused character fails here
        for attempt in range(1, self._attempts):
            try:
                return self._copy_once(data)
            except RETRYABLE as err:
                self.close()
                log.warning("database write failed (%s); retry %d", err, attempt)
                time.sleep(min(0.2 * 2**attempt, 5.0))
        try:
            return self._copy_once(data)
        except RETRYABLE:
            self.close()
            raise

    def _copy_once(self, data: bytes) -> int:
        conn = self._connection()
        with conn, conn.cursor() as cur:
            cur.copy_expert(_COPY, io.BytesIO(data))
            cur.execute(_MERGE)
            return cur.rowcount

    def _write_samples(self, samples: list[tuple]) -> None:
        """Store the sampled feature vectors once their score rows are written. They are
        evidence for a check, not results: a failure is logged and scoring goes on."""
        if not samples:
            return
        try:
            conn = self._connection()
            with conn, conn.cursor() as cur:
                psycopg2.extras.execute_values(cur, _SAMPLES, samples)
        except psycopg2.Error as err:
            self.close()
            log.warning("%d feature samples not stored: %s", len(samples), err)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


class InlineDeadLetters:
    """Inline scores that could not be stored go to a Kafka topic of their own, one JSON
    row (the scored_transactions columns) per message with the reason in an `error`
    header, so they can be replayed into the table; a metric counts them by reason."""

    def __init__(self, producer: Producer, topic: str):
        self._producer = producer
        self._topic = topic

    def send(self, batch: ScoredBatch, reason: str, kind: str, rows: list[int] | None = None):
        """Dead-letter the rows of `batch` (all, or those at the indices `rows`)."""
        every = list(_rows(batch, "inline"))
        chosen = every if rows is None else [every[i] for i in rows]
        header = [("error", mask_pii(reason).encode())]
        for row in chosen:
            record = dict(zip(SCORE_COLUMNS, row, strict=True))
            record["reasons"] = json.loads(record["reasons"])
            self._produce(json.dumps(record).encode(), str(record["user_id"]).encode(), header)
        metrics.INLINE_DEAD_LETTERED.labels(reason=kind).inc(len(chosen))
        log.error("%d inline scores sent to %s: %s", len(chosen), self._topic, reason)

    def _produce(self, value: bytes, key: bytes, headers) -> None:
        while True:
            try:
                self._producer.produce(
                    self._topic, value=value, key=key, headers=headers, on_delivery=_delivered
                )
                self._producer.poll(0)
                return
            except BufferError:  # the local queue is full: let deliveries drain
                self._producer.poll(0.05)

    def close(self, timeout: float = 30.0) -> None:
        remaining = self._producer.flush(timeout)
        if remaining:
            metrics.INLINE_LOST.inc(remaining)
            log.error("%d dead-lettered inline scores still undelivered at shutdown", remaining)


def _delivered(err, _msg) -> None:
    if err is not None:  # neither Postgres nor Kafka took the score: say so loudly
        metrics.INLINE_LOST.inc()
        log.error("an inline score could not be dead-lettered: %s", err)


class InlineScoreSink:
    """Persists inline scores off the request path, in micro-batches, losing none silently.

    `submit` only enqueues, up to `max_queued_rows` waiting rows (a Postgres outage must not
    grow the server without bound); beyond that, and whatever the writer cannot store after
    its retries, goes to the dead letters. One thread takes whatever has queued (up to
    max_rows, waiting at most max_wait_s for more), writes it, and repeats; a row the
    database refuses is dead-lettered alone. `close` drains the queue."""

    _STOP = object()

    def __init__(
        self,
        writer: ScoreWriter,
        dead_letters: InlineDeadLetters,
        max_rows: int = 2000,
        max_wait_s: float = 0.02,
        max_queued_rows: int = 100_000,
    ):
        self._writer = writer
        self._dead = dead_letters
        self._max_rows = max_rows
        self._max_wait = max_wait_s
        self._max_queued = max_queued_rows
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._done = threading.Condition()
        self._submitted = 0
        self._finished = 0
        self._queued_rows = 0
        self._thread = threading.Thread(target=self._run, name="inline-sink", daemon=True)
        self._thread.start()

    def submit(self, batch: ScoredBatch) -> None:
        with self._done:
            self._submitted += 1
            full = self._queued_rows + len(batch) > self._max_queued
            if full:
                self._finished += 1
                self._done.notify_all()
            else:
                self._queued_rows += len(batch)
        if full:
            reason = f"inline queue full ({self._max_queued} rows wait for Postgres)"
            self._dead.send(batch, reason, "queue_full")
        else:
            self._queue.put(batch)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is written (or dead-lettered)."""
        with self._done:
            target = self._submitted
            return self._done.wait_for(lambda: self._finished >= target, timeout=timeout)

    def close(self, timeout: float = 30.0) -> None:
        self._queue.put(self._STOP)
        self._thread.join(timeout=timeout)
        self._writer.close()
        self._dead.close()

    def _take(self) -> tuple[list[ScoredBatch], bool]:
        """Block for one batch, then gather more until max_rows or max_wait."""
        first = self._queue.get()
        if first is self._STOP:
            return [], True
        taken, rows = [first], len(first)
        deadline = time.monotonic() + self._max_wait
        while rows < self._max_rows:
            try:
                item = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                break
            if item is self._STOP:
                return taken, True
            taken.append(item)
            rows += len(item)
        return taken, False

    def _store(self, taken: list[ScoredBatch]) -> None:
        """Write, dead-letter what the database refused, and everything if it cannot be
        reached after the writer's retries."""
        try:
            result = self._writer.write([(b, "inline") for b in taken])
        except Exception as err:  # noqa: BLE001 - nothing may be dropped silently
            log.exception("could not persist %d inline scores", sum(map(len, taken)))
            for batch in taken:
                self._dead.send(batch, f"not written to Postgres: {err}", "unwritten")
            return
        for refused in result.refused:
            self._dead.send(taken[refused.batch], refused.reason, "refused", [refused.row])

    def _run(self) -> None:
        stopping = False
        while not stopping:
            taken, stopping = self._take()
            if not taken:
                continue
            self._store(taken)
            with self._done:
                self._finished += len(taken)
                self._queued_rows -= sum(map(len, taken))
                self._done.notify_all()


class DeploymentRecorder:
    """Records model swaps (model_deployments + audit_log) and rejections (audit_log)
    for this process. Failures are logged, never raised: serving must go on."""

    def __init__(self, database_url: str, role: str):
        self._url = database_url
        self._role = role
        self._host = socket.gethostname()
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def _detail(self, **extra: Any) -> dict[str, Any]:
        return {"role": self._role, "host": self._host, "pid": self._pid, **extra}

    def _run(self, what: str, work) -> None:
        with self._lock:
            try:
                conn = connect(self._url)
                try:
                    with conn, conn.cursor() as cur:
                        work(cur)
                finally:
                    conn.close()
            except psycopg2.Error:
                log.exception("could not record %s in the database", what)

    def _close_open(self, cur) -> None:
        """Close this process's open row, and those of processes on this host that died
        without closing theirs (SIGKILL, OOM): otherwise a dead process would still seem
        to serve its version."""
        cur.execute(
            "SELECT DISTINCT pid FROM model_deployments "
            "WHERE host = %s AND served_until IS NULL AND pid <> %s",
            (self._host, self._pid),
        )
        dead = [pid for (pid,) in cur.fetchall() if pid is not None and not process_alive(pid)]
        cur.execute(
            "UPDATE model_deployments SET served_until = now() "
            "WHERE host = %s AND pid = ANY(%s) AND served_until IS NULL",
            (self._host, [self._pid, *dead]),
        )

    def reload(self, old: LoadedModel | None, new: LoadedModel, reason: str) -> None:
        def work(cur) -> None:
            self._close_open(cur)
            cur.execute(
                "INSERT INTO model_deployments "
                "(version, mlflow_run_id, host, pid, served_from, reason) "
                "VALUES (%s, %s, %s, %s, now(), %s)",
                (new.version, new.mlflow_run_id, self._host, self._pid, reason),
            )
            detail = self._detail(
                previous=old.version if old else None,
                path=str(new.path),
                published_at=new.published_at,
                mlflow_run_id=new.mlflow_run_id,
                reason=reason,
            )
            append_audit(cur, "reload", new.version, detail)

        self._run(f"the swap to {new.version}", work)

    def reload_rejected(self, path: Path, problem: str, serving: str | None) -> None:
        detail = self._detail(path=str(path), problem=problem, still_serving=serving)
        self._run(
            f"the rejection of {path}",
            lambda cur: append_audit(cur, "reload_rejected", Path(path).name, detail),
        )

    def stopped(self) -> None:
        """On shutdown: the version this process served is no longer served by it."""
        self._run("the shutdown", self._close_open)
