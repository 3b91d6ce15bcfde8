"""Postgres access shared by the scoring service, the pipeline stages and the scheduled jobs.

`connect` is the one place connection defaults are set, so every process reaches the
database the same way. `append_audit` is the one writer of `audit_log`: it runs on the
caller's cursor, so the audit row commits or rolls back together with the change it records
(the table is append-only by trigger, see serving/migrations). The schema itself belongs to
the service's migrations (`serving.db`)."""

from __future__ import annotations

import json
from typing import Any

import psycopg2
import psycopg2.extensions

_AUDIT = "INSERT INTO audit_log (kind, subject, detail) VALUES (%s, %s, %s::jsonb)"


def connect(url: str, **kwargs: Any) -> psycopg2.extensions.connection:
    """A psycopg2 connection with the project's defaults (a bounded wait for the server, and
    the name pg_stat_activity shows); keyword arguments override them. An empty URL is
    refused: libpq would otherwise quietly try a local server."""
    if not url:
        raise ValueError("no database URL: set DATABASE_URL")
    kwargs.setdefault("connect_timeout", 10)
    kwargs.setdefault("application_name", "fraudops")
    return psycopg2.connect(url, **kwargs)


def append_audit(cur, kind: str, subject: str, detail: dict[str, Any]) -> None:
    """Append one audit_log row with the caller's cursor, inside the caller's transaction."""
    cur.execute(_AUDIT, (kind, subject, json.dumps(detail)))


def append_audit_alone(url: str, kind: str, subject: str, detail: dict[str, Any]) -> None:
    """`append_audit` in a transaction of its own, for a command whose only database write
    is its audit row (a promotion, a rollback)."""
    conn = connect(url)
    try:
        with conn, conn.cursor() as cur:
            append_audit(cur, kind, subject, detail)
    finally:
        conn.close()
