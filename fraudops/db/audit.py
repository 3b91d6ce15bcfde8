"""The one writer of `audit_log` (promotions, rollbacks, model reloads, labels, API callers,
rules and lists).

`append_audit` runs on the caller's cursor, so the audit row commits or rolls back together
with the change it records; the table is append-only by trigger (migrations/001_initial.sql)."""

from __future__ import annotations

import json
from typing import Any

from fraudops.db import connect

_AUDIT = "INSERT INTO audit_log (kind, subject, detail) VALUES (%s, %s, %s::jsonb)"


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
