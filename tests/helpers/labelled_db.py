"""A small database of scored and labelled transactions, for the tests of what reads labels
(collect_feedback, the label watch and its DAG)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from fraudops import db
from serving.labels import record_label

# (id, event_ts, type, amount, dest_id, score, band, model_version, label, label source)
ROWS = [
    ("tx-c", 1_700_000_300, "TRANSFER", 900.0, 42, 0.91, "BLOCK", "v1", "FRAUD", "chargeback:visa"),
    ("tx-a", 1_700_000_100, "PAYMENT", 12.5, None, 0.02, "ALLOW", "v1", "LEGIT", "analyst:alice"),
    ("tx-b", 1_700_000_200, "CASH_OUT", 300.0, 7, 0.40, "CHALLENGE", "v2", "FRAUD", "analyst:bob"),
    ("tx-d", 1_700_000_200, "DEBIT", 5.0, 8, 0.60, "CHALLENGE", "v2", None, None),
]


@contextlib.contextmanager
def labelled_database(server_url: str) -> Iterator[tuple[str, object]]:
    """A database of its own holding exactly ROWS (tx-d scored, never labelled): yields its
    URL and an open connection; dropped on exit."""
    name = f"feedback_{uuid.uuid4().hex[:8]}"
    url = db.create_database(server_url, name)
    db.migrate(url)
    conn = db.connect(url)
    try:
        with conn, conn.cursor() as cur:
            for tx_id, ts, kind, amount, dest, score, band, version, _, _ in ROWS:
                cur.execute(
                    "INSERT INTO scored_transactions (transaction_id, user_id, event_ts, type,"
                    " amount, old_balance_orig, new_balance_orig, old_balance_dest,"
                    " new_balance_dest, is_unauthorized_overdraft, dest_id, score, band,"
                    " model_version, source) VALUES (%s, 11, %s, %s, %s, 1000, 1000 - %s, 0, %s,"
                    " 0, %s, %s, %s, %s, 'stream')",
                    (tx_id, ts, kind, amount, amount, amount, dest, score, band, version),
                )
        for tx_id, *_, label, source in ROWS:
            if label:
                record_label(conn, tx_id, label, source)
        yield url, conn
    finally:
        conn.close()
        db.drop_database(server_url, name)
