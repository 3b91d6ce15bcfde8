"""Analysts' and chargeback feeds' verdicts on scored transactions.

One entry point, `record_label`, used by both doors a label comes in through: the gRPC
`Feedback.SubmitLabel` servicer and the Kafka `transaction_labels` consumer. It validates
the label, upserts `feedback_labels` (a later verdict supersedes the earlier one) and
appends the change to `audit_log`, all in one database transaction, so the label the next
training run reads and the history an auditor reads can never disagree. A verdict given
from the review queue names the queue's day and is stored with the item's reason."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

from fraudops.db.audit import append_audit
from fraudops.pii import mask_pii
from fraudops.review_queue import queued_reason
from fraudops.schema import MAX_ID_LENGTH, text_problem

LABELS: tuple[str, ...] = ("FRAUD", "LEGIT")
MAX_SOURCE_LENGTH = 64
MAX_NOTE_LENGTH = 512
AUDIT_KIND = "label"
# The source of a label given in the console by its signed-in user (`analyst:<name>`): the
# console writes those straight to Postgres, so no other door (gRPC, Kafka) may carry one.
RESERVED_SOURCE = "analyst:"


class LabelError(ValueError):
    """A label broke a rule. `field` names the offending field (as in the LabelRequest)."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class UnknownTransaction(LabelError):
    """The label names a transaction that was never scored, so there is nothing to learn from."""

    def __init__(self, transaction_id: str):
        super().__init__(
            "transaction_id", f"unknown transaction {transaction_id[:MAX_ID_LENGTH]!r}"
        )


@dataclass(frozen=True)
class LabelResult:
    """What `record_label` did. `previous` is the label this one replaced, if any;
    `changed` is False when the same verdict from the same source was already stored."""

    transaction_id: str
    label: str
    superseded: bool
    previous: str | None
    changed: bool = True
    queue_reason: str | None = None


def label_name(value: int | str) -> str:
    """The label as text, from the proto enum number (LabelRequest.label) or from text."""
    if isinstance(value, str):
        return value.strip().upper()
    names = {1: "FRAUD", 2: "LEGIT"}
    return names.get(int(value), "")


def validate_label(transaction_id: Any, label: Any, source: Any, note: Any) -> str:
    """Check every field before touching the database; returns the normalised label."""
    if not isinstance(transaction_id, str) or not transaction_id.strip():
        raise LabelError("transaction_id", "must be a non-empty string")
    if problem := text_problem(transaction_id, MAX_ID_LENGTH, printable=True):
        raise LabelError("transaction_id", problem)
    name = label_name(label) if isinstance(label, int | str) else ""
    if name not in LABELS:
        shown = str(label)[:MAX_SOURCE_LENGTH]
        raise LabelError("label", f"must be one of {', '.join(LABELS)}, got {shown!r}")
    if not isinstance(source, str) or not source.strip():
        raise LabelError("source", "must name who labelled (e.g. 'analyst:alice')")
    if problem := text_problem(source, MAX_SOURCE_LENGTH, printable=True):
        raise LabelError("source", problem)
    if not isinstance(note, str):
        raise LabelError("note", "must be text")
    if problem := text_problem(note, MAX_NOTE_LENGTH):
        raise LabelError("note", problem)
    return name


def source_refusal(patterns: Iterable[str], source: str, who: str) -> str | None:
    """Why `who`, allowed `patterns`, may not write a label from `source`; None if it may."""
    shown = source[:MAX_SOURCE_LENGTH]
    if source.startswith(RESERVED_SOURCE):
        return (f"source: {shown!r} is reserved for the console's signed-in analysts; "
                f"{who} may not write it")  # fmt: skip
    if any(fnmatch.fnmatchcase(source, p) for p in patterns):
        return None
    return f"source: {who} may not write labels from {shown!r}"


@contextmanager
def _one_transaction(conn) -> Iterator[Any]:
    """Commit everything inside at once, or nothing, even on an autocommit connection."""
    autocommit = conn.autocommit
    if autocommit:
        conn.autocommit = False
    try:
        with conn, conn.cursor() as cur:
            yield cur
    finally:
        if autocommit:
            conn.autocommit = True


_CURRENT = """
SELECT label, source, note, queue_reason FROM feedback_labels WHERE transaction_id = %s FOR UPDATE
"""
_UPSERT = """
INSERT INTO feedback_labels (transaction_id, label, source, note, queue_reason, labelled_at,
                             supersedes)
VALUES (%s, %s, %s, %s, %s, now(), NULL)
ON CONFLICT (transaction_id) DO UPDATE
   SET label = EXCLUDED.label, source = EXCLUDED.source, note = EXCLUDED.note,
       queue_reason = EXCLUDED.queue_reason, labelled_at = EXCLUDED.labelled_at,
       supersedes = feedback_labels.label
RETURNING supersedes, labelled_at
"""


def record_label(
    conn,
    transaction_id: str,
    label: str,
    source: str,
    note: str = "",
    queue_date: date | None = None,
) -> LabelResult:
    """Validate and store one verdict; raise LabelError (UnknownTransaction) naming the field.

    `queue_date`: the verdict was given from that day's review queue, so it is stored with
    the item's reason; an item no longer in that queue (rebuilt meanwhile) is refused.
    The row lock taken on the current label serialises two verdicts racing on one
    transaction, so each audit row names the label it really replaced. Re-sending the
    verdict already stored (same label, source, note and reason: a Kafka redelivery after a
    crash between the database commit and the offset commit) changes nothing and audits
    nothing."""
    name = validate_label(transaction_id, label, source, note)
    with _one_transaction(conn) as cur:
        cur.execute(
            "SELECT 1 FROM scored_transactions WHERE transaction_id = %s", (transaction_id,)
        )
        if cur.fetchone() is None:
            raise UnknownTransaction(transaction_id)
        reason = _reason(cur, queue_date, transaction_id)
        cur.execute(_CURRENT, (transaction_id,))
        current = cur.fetchone()
        if current is not None and tuple(current) == (name, source, note, reason):
            return LabelResult(transaction_id, name, False, None, False, reason)
        cur.execute(_UPSERT, (transaction_id, name, source, note, reason))
        previous, labelled_at = cur.fetchone()
        detail = {
            "source": source,
            "old": previous,
            "new": name,
            "labelled_at": labelled_at.isoformat(),
            "note": mask_pii(note),
        }
        if reason:
            detail["queue_reason"] = reason
        append_audit(cur, AUDIT_KIND, transaction_id, detail)
    return LabelResult(transaction_id, name, previous is not None, previous, True, reason)


def _reason(cur, queue_date: date | None, transaction_id: str) -> str | None:
    """The queue reason a verdict given from `queue_date`'s queue carries."""
    if queue_date is None:
        return None
    reason = queued_reason(cur, queue_date, transaction_id)
    if reason is None:
        raise LabelError("queue_date", f"not in the review queue of {queue_date.isoformat()}")
    return reason
