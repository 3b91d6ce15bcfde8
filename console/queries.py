"""What the console reads from Postgres: the active-learning review queue, the flagged
list, a transaction and its context, the deployments timeline and the trends.

Every value reaches SQL as a bound parameter; only fixed fragments of this module are
ever joined into a statement. The queue pages by keyset (the last row's sort key and
transaction id), so page 500 costs what page 1 does, through the partial indexes of
migration 003."""

from __future__ import annotations

import base64
import binascii
import json
import socket
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import psycopg2.extras

from fraudops.processes import process_alive

FLAGGED = ("CHALLENGE", "BLOCK")
INT64_MAX = 2**63 - 1
USER_HISTORY_S = 24 * 3600
USER_HISTORY_ROWS = 500

# (expression, name) of each queue column: the SELECT list and the CSV header.
_QUEUE_SELECT = (
    *((f"s.{c}", c) for c in ("transaction_id", "user_id", "event_ts", "type", "amount",
                               "channel", "score", "band", "model_version", "source",
                               "scored_at")),
    ("f.label", "label"), ("c.user_name", "claimed_by"), ("c.expires_at", "claim_expires_at"),
)  # fmt: skip
QUEUE_COLUMNS = ", ".join(f"{expr} AS {name}" for expr, name in _QUEUE_SELECT)
EXPORT_COLUMNS = [name for _, name in _QUEUE_SELECT]
# Sort key column and its cast for the keyset comparison.
SORTS = {"score": ("s.score", "float8"), "newest": ("s.scored_at", "timestamptz")}


class BadCursor(ValueError):
    """The pagination cursor was not one this module produced."""


@dataclass(frozen=True)
class QueueFilter:
    """The queue's filters, already validated by the web layer."""

    band: tuple[str, ...] = ()
    type: tuple[str, ...] = ()
    amount_min: float | None = None
    amount_max: float | None = None
    since: datetime | None = None
    until: datetime | None = None
    model_version: str | None = None
    source: str | None = None
    labelled: str = "no"  # no / yes / any
    q: str | None = None
    sort: str = "score"
    hide_claimed: bool = False


def rows(cur) -> list[dict[str, Any]]:
    return [dict(r) for r in cur.fetchall()]


def dict_cursor(conn):
    return conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor)


def encode_cursor(row: dict[str, Any], sort: str) -> str:
    key = row["score"] if sort == "score" else row["scored_at"].isoformat()
    raw = json.dumps([key, row["transaction_id"]]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str, sort: str) -> tuple[Any, str]:
    try:
        key, tx_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, ValueError, TypeError) as err:
        raise BadCursor("not a cursor of this queue") from err
    valid_key = isinstance(key, float | int) if sort == "score" else isinstance(key, str)
    if not valid_key or not isinstance(tx_id, str):
        raise BadCursor(f"not a cursor of the {sort!r} order")
    if sort == "newest":
        try:
            key = datetime.fromisoformat(key)
        except ValueError as err:
            raise BadCursor("not a cursor of the 'newest' order") from err
    return key, tx_id


def _search(q: str) -> tuple[str, list[Any]]:
    """A transaction id, or (when it is a number) a user id too."""
    if q.isdigit() and int(q) <= INT64_MAX:
        return "(s.transaction_id = %s OR s.user_id = %s)", [q, int(q)]
    return "s.transaction_id = %s", [q]


def queue_where(f: QueueFilter) -> tuple[str, list[Any]]:
    """The WHERE clause of a filter and its parameters."""
    # One band clause: the planner multiplies the selectivities of two on one column, and
    # the underestimate turns an ordered index scan into reading every flagged row.
    # Either form implies the partial indexes' predicate (bands are checked upstream).
    clauses: list[str] = []
    params: list[Any] = []

    def add(clause: str, *values: Any) -> None:
        clauses.append(clause)
        params.extend(values)

    if f.band and set(f.band) <= set(FLAGGED):
        add("s.band = ANY(%s)", list(f.band))
    else:
        add("s.band IN ('CHALLENGE', 'BLOCK')")
    if f.type:
        add("s.type = ANY(%s)", list(f.type))
    if f.amount_min is not None:
        add("s.amount >= %s", f.amount_min)
    if f.amount_max is not None:
        add("s.amount <= %s", f.amount_max)
    if f.since is not None:
        add("s.scored_at >= %s", f.since)
    if f.until is not None:
        add("s.scored_at < %s", f.until)
    if f.model_version:
        add("s.model_version = %s", f.model_version)
    if f.source:
        add("s.source = %s", f.source)
    if f.labelled == "no":
        add("f.transaction_id IS NULL")
    elif f.labelled == "yes":
        add("f.transaction_id IS NOT NULL")
    if f.hide_claimed:
        add("(c.user_name IS NULL)")
    if f.q:
        clause, values = _search(f.q)
        add(clause, *values)
    return " AND ".join(clauses), params


_QUEUE_FROM = (
    " FROM scored_transactions s"
    " LEFT JOIN feedback_labels f ON f.transaction_id = s.transaction_id"
    " LEFT JOIN console_claims c ON c.transaction_id = s.transaction_id AND c.expires_at > now()"
)


def queue_page(conn, f: QueueFilter, limit: int, cursor: str | None) -> dict[str, Any]:
    """One page of the queue and the cursor of the next (None on the last page)."""
    where, params = queue_where(f)
    column, cast = SORTS[f.sort]
    if cursor:
        key, tx_id = decode_cursor(cursor, f.sort)
        where += f" AND ({column}, s.transaction_id) < (%s::{cast}, %s)"
        params += [key, tx_id]
    sql = (
        f"SELECT {QUEUE_COLUMNS}{_QUEUE_FROM} WHERE {where}"
        f" ORDER BY {column} DESC, s.transaction_id DESC LIMIT %s"
    )
    with dict_cursor(conn) as cur:
        cur.execute(sql, [*params, limit + 1])
        found = rows(cur)
    more = len(found) > limit
    items = found[:limit]
    next_cursor = encode_cursor(items[-1], f.sort) if more else None
    return {"items": items, "next_cursor": next_cursor}


def queue_export(conn, f: QueueFilter, max_rows: int, batch: int = 2000):
    """The header, then every row of the filter (up to `max_rows`), fetched in batches by
    a server cursor."""
    where, params = queue_where(f)
    column, _ = SORTS[f.sort]
    sql = (
        f"SELECT {QUEUE_COLUMNS}{_QUEUE_FROM} WHERE {where}"
        f" ORDER BY {column} DESC, s.transaction_id DESC LIMIT %s"
    )
    yield EXPORT_COLUMNS
    with conn.cursor(name="console_export", withhold=True) as cur:
        cur.itersize = batch
        cur.execute(sql, [*params, max_rows])
        yield from cur


QUEUE_DAYS_LISTED = 14
_QUEUE_DAYS = """
SELECT q.queue_date AS day, count(*) AS items, count(f.label) AS labelled
  FROM review_queue q LEFT JOIN feedback_labels f ON f.transaction_id = q.transaction_id
 GROUP BY 1 ORDER BY 1 DESC LIMIT %s"""
_QUEUE_ITEMS = """
SELECT q.position, q.reason, q.transaction_id, s.user_id, s.event_ts, s.type, s.amount,
       s.channel, q.score, q.band, q.model_version, f.label, f.queue_reason AS label_reason,
       c.user_name AS claimed_by
  FROM review_queue q
  JOIN scored_transactions s ON s.transaction_id = q.transaction_id
  LEFT JOIN feedback_labels f ON f.transaction_id = q.transaction_id
  LEFT JOIN console_claims c ON c.transaction_id = q.transaction_id AND c.expires_at > now()
 WHERE q.queue_date = %s ORDER BY q.position"""


def review_queue(conn, day: date | None) -> dict[str, Any]:
    """The job's queue of `day` (default: the newest day built), in review order, each item
    with its reason and label, and the recent days with how much of each is labelled."""
    with dict_cursor(conn) as cur:
        cur.execute(_QUEUE_DAYS, (QUEUE_DAYS_LISTED,))
        days = rows(cur)
        day = day or (days[0]["day"] if days else None)
        items: list[dict[str, Any]] = []
        if day is not None:
            cur.execute(_QUEUE_ITEMS, (day,))
            items = rows(cur)
    return {"day": day, "days": days, "items": items}


_TX_COLUMNS = (
    "transaction_id, user_id, event_ts, type, amount, old_balance_orig, new_balance_orig,"
    " old_balance_dest, new_balance_dest, is_unauthorized_overdraft, dest_id, channel, score,"
    " band, model_version, reasons, latency_us, source, scored_at, ip_country, ip_kind,"
    " card_country, billing_country"
)
USER_COUNTRIES_ROWS = 20


def transaction(conn, transaction_id: str) -> dict[str, Any] | None:
    """A scored transaction with its label, its history, its claim and the user's day."""
    with dict_cursor(conn) as cur:
        cur.execute(
            f"SELECT {_TX_COLUMNS} FROM scored_transactions WHERE transaction_id = %s",
            (transaction_id,),
        )
        tx = cur.fetchone()
        if tx is None:
            return None
        cur.execute(
            "SELECT label, source, note, labelled_at, supersedes FROM feedback_labels"
            " WHERE transaction_id = %s",
            (transaction_id,),
        )
        label = cur.fetchone()
        cur.execute(
            "SELECT at, detail FROM audit_log WHERE kind = 'label' AND subject = %s ORDER BY id",
            (transaction_id,),
        )
        history = [{"at": r["at"], **r["detail"]} for r in cur.fetchall()]
        cur.execute(
            "SELECT user_name AS claimed_by, expires_at FROM console_claims"
            " WHERE transaction_id = %s AND expires_at > now()",
            (transaction_id,),
        )
        claim = cur.fetchone()
        cur.execute(
            "SELECT transaction_id, event_ts, type, amount, score, band, channel"
            " FROM scored_transactions WHERE user_id = %s AND event_ts > %s AND event_ts <= %s"
            " ORDER BY event_ts DESC, transaction_id DESC LIMIT %s",
            (tx["user_id"], tx["event_ts"] - USER_HISTORY_S, tx["event_ts"], USER_HISTORY_ROWS),
        )
        user_day = rows(cur)
        user_countries = _user_countries(cur, tx["user_id"], tx["event_ts"])
    return {
        "transaction": dict(tx),
        "label": dict(label) if label else None,
        "label_history": history,
        "claim": dict(claim) if claim else None,
        "user_last_24h": user_day,
        "user_countries": user_countries,
    }


def _user_countries(cur, user_id: int, until: int) -> list[dict[str, Any]]:
    """The countries a user paid from up to a transaction (by IP), most recent first, with
    how often and when last."""
    cur.execute(
        "SELECT ip_country AS country, count(*) AS payments, max(event_ts) AS last_ts"
        " FROM scored_transactions WHERE user_id = %s AND event_ts <= %s"
        " AND ip_country IS NOT NULL GROUP BY ip_country ORDER BY last_ts DESC LIMIT %s",
        (user_id, until, USER_COUNTRIES_ROWS),
    )
    return rows(cur)


def claim(conn, transaction_id: str, user_name: str, ttl_s: int) -> dict[str, Any] | None:
    """Claim an item for `user_name` (renewing their own claim); None when someone else
    holds a live claim. Raises LookupError when the transaction does not exist."""
    with conn, dict_cursor(conn) as cur:
        cur.execute(
            "SELECT 1 FROM scored_transactions WHERE transaction_id = %s", (transaction_id,)
        )
        if cur.fetchone() is None:
            raise LookupError(transaction_id)
        cur.execute(
            "INSERT INTO console_claims (transaction_id, user_name, expires_at)"
            " VALUES (%s, %s, now() + make_interval(secs => %s))"
            " ON CONFLICT (transaction_id) DO UPDATE"
            " SET user_name = EXCLUDED.user_name, claimed_at = now(),"
            " expires_at = EXCLUDED.expires_at"
            " WHERE console_claims.user_name = EXCLUDED.user_name"
            " OR console_claims.expires_at <= now()"
            " RETURNING user_name AS claimed_by, expires_at",
            (transaction_id, user_name, ttl_s),
        )
        return cur.fetchone()


def release(conn, transaction_id: str, user_name: str) -> None:
    with conn, conn.cursor() as cur:
        cur.execute(
            "DELETE FROM console_claims WHERE transaction_id = %s AND user_name = %s",
            (transaction_id, user_name),
        )


def deployments(conn, limit: int = 200) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The deployments timeline, newest first, and the promotions and rollbacks audited."""
    with dict_cursor(conn) as cur:
        cur.execute(
            "SELECT id, version, mlflow_run_id, host, pid, served_from, served_until, reason"
            " FROM model_deployments ORDER BY served_from DESC, id DESC LIMIT %s",
            (limit,),
        )
        found = rows(cur)
        cur.execute(
            "SELECT at, kind, subject, detail FROM audit_log"
            " WHERE kind IN ('promotion', 'rollback') ORDER BY id DESC LIMIT %s",
            (limit,),
        )
        events = rows(cur)
    return found, events


def served_version(conn) -> str | None:
    """The version the most recently started scoring process serves. A process on this
    host that died without closing its row (SIGKILL) is passed over: it serves nothing."""
    here = socket.gethostname()
    with conn.cursor() as cur:
        cur.execute(
            "SELECT version, host, pid FROM model_deployments WHERE served_until IS NULL"
            " ORDER BY served_from DESC, id DESC LIMIT 50"
        )
        for version, host, pid in cur:
            if host != here or pid is None or process_alive(pid):
                return version
    return None


_LATEST_DRIFT = """
SELECT window_start, window_end, model_version, rows, drifted, consecutive, alarm,
       drifted_features, max_feature_psi, score_psi, band_psi, skew_checked, skew_mismatches
  FROM drift_reports ORDER BY window_end DESC, id DESC LIMIT 1"""
_LAST_ALARM = "SELECT max(window_end) FROM drift_reports WHERE alarm"


def latest_drift(conn) -> dict[str, Any] | None:
    """The drift watch's newest window and when it last raised the alarm (None: no report)."""
    with conn.cursor() as cur:
        cur.execute(_LATEST_DRIFT)
        row = cur.fetchone()
        if row is None:
            return None
        names = [c.name for c in cur.description]
        cur.execute(_LAST_ALARM)
        last_alarm = cur.fetchone()[0]
    report = dict(zip(names, row, strict=True))
    report["last_alarm_at"] = last_alarm
    return report


def trends(conn, days: int) -> dict[str, Any]:
    """Daily volumes by band and fraud rate, precision of the flagged bands by their
    labels, and analysts' labels per day (from the audit trail: every verdict, not only
    the ones still standing)."""
    window = "make_interval(days => %s)"
    with dict_cursor(conn) as cur:
        cur.execute(
            "SELECT date_trunc('day', s.scored_at)::date AS day, count(*) AS transactions,"
            " count(*) FILTER (WHERE s.band = 'CHALLENGE') AS challenge,"
            " count(*) FILTER (WHERE s.band = 'BLOCK') AS block,"
            " count(f.label) AS labelled,"
            " count(*) FILTER (WHERE f.label = 'FRAUD') AS fraud"
            " FROM scored_transactions s"
            " LEFT JOIN feedback_labels f ON f.transaction_id = s.transaction_id"
            f" WHERE s.scored_at > now() - {window} GROUP BY 1 ORDER BY 1",
            (days,),
        )
        daily = rows(cur)
        cur.execute(
            "SELECT s.band, count(*) AS labelled,"
            " count(*) FILTER (WHERE f.label = 'FRAUD') AS fraud"
            " FROM scored_transactions s"
            " JOIN feedback_labels f ON f.transaction_id = s.transaction_id"
            f" WHERE s.band IN ('CHALLENGE', 'BLOCK') AND s.scored_at > now() - {window}"
            " GROUP BY 1 ORDER BY 1",
            (days,),
        )
        precision = [
            {**r, "precision": r["fraud"] / r["labelled"] if r["labelled"] else None}
            for r in rows(cur)
        ]
        cur.execute(
            "SELECT date_trunc('day', at)::date AS day, detail->>'source' AS source,"
            " count(*) AS labels FROM audit_log"
            " WHERE kind = 'label' AND detail->>'source' LIKE 'analyst:%%'"
            f" AND at > now() - {window} GROUP BY 1, 2 ORDER BY 1, 2",
            (days,),
        )
        throughput = rows(cur)
    for day in daily:
        day["fraud_rate"] = day["fraud"] / day["labelled"] if day["labelled"] else None
    return {"daily": daily, "precision": precision, "throughput": throughput}
