"""collect_feedback: the head of the pipeline that turns analysts' verdicts into data.

Exports the labels in `feedback_labels`, joined with the transactions exactly as they were
scored (raw fields, score, band, model version), to a Parquet file with
TRANSACTION_COLUMNS (is_fraud = the label) plus score, band, model_version, label,
label_source, label_kind (fraudops.label_kinds: `feedback` from analysts, `delayed` from
chargebacks and the like) and labelled_at, sorted by timestamp.

A transaction nobody labelled is not evidence of anything while a chargeback may still
come; once `label_delay_days` have passed since it happened, it is exported as LEGIT with
source `matured` (kind delayed, labelled_at = its time plus the delay). That is how the
delayed labels become a sample of all traffic rather than of the frauds alone.

The file is byte-identical for the same labels, so DVC sees no change and nothing
downstream re-runs when no label arrived. A small JSON report beside it (count and window)
feeds train's MLflow run and the model.json.

Context rows: the per-user velocity features of a labelled transaction count the user's
earlier transactions, which the scorer had in its state whether or not anyone labelled
them. So the file also holds, unlabelled (label, label_source, label_kind and labelled_at
null), every other scored transaction of a labelled user from MAX_GAP_SECONDS before the
user's first labelled one up to the last: featurize computes the features over them and
trains on the labelled rows only, so a label is learnt with the features it was scored
with. The range ends at a labelled row, so traffic without new labels changes no byte.

Without DATABASE_URL the stage writes an empty file with the same columns: the pipeline
still runs on synthetic data alone.

    python -m training.collect_feedback --out data/feedback/labels.parquet \
        [--report reports/feedback.json] [--params params.yaml]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fraudops.db import connect
from fraudops.features import MAX_GAP_SECONDS
from fraudops.label_kinds import MATURED_SOURCE, label_kind
from fraudops.params import DEFAULT_PARAMS, load_params
from fraudops.pii import configure_logging
from fraudops.schema import (
    LABEL_COLUMN,
    LOCATION_DATA_COLUMNS,
    NUMERIC_COLUMNS,
    TRANSACTION_COLUMNS,
)
from fraudops.settings import load_settings

log = logging.getLogger("fraudops.collect_feedback")

FEEDBACK_COLUMNS: tuple[str, ...] = (
    *TRANSACTION_COLUMNS,
    "score",
    "band",
    "model_version",
    "label",
    "label_source",
    "label_kind",
    "labelled_at",
    "balances_missing",  # the producer had no balances (a card payment): not zeros
    *LOCATION_DATA_COLUMNS,  # what the scorer derived of the address ("" unknown)
)
_TYPES: dict[str, pa.DataType] = {
    "transaction_id": pa.string(),
    "user_id": pa.int64(),
    "timestamp": pa.int64(),
    "type": pa.string(),
    **{name: pa.float64() for name in NUMERIC_COLUMNS},
    "dest_id": pa.int64(),
    LABEL_COLUMN: pa.int8(),
    "score": pa.float64(),
    "band": pa.string(),
    "model_version": pa.string(),
    "label": pa.string(),
    "label_source": pa.string(),
    "label_kind": pa.string(),
    "labelled_at": pa.timestamp("us", tz="UTC"),
    "balances_missing": pa.bool_(),
    **{name: pa.string() for name in LOCATION_DATA_COLUMNS},
}
# Null on context rows only (see the module docstring).
_CONTEXT_NULL = frozenset({"label", "label_source", "label_kind", "labelled_at"})
SCHEMA = pa.schema(
    [pa.field(name, _TYPES[name], nullable=name in _CONTEXT_NULL) for name in FEEDBACK_COLUMNS]
)

# The row order is part of the output: ties on timestamp break on the id, so the same
# labels always give the same bytes.
_COLUMNS = """
SELECT s.transaction_id, s.user_id, s.event_ts, s.type, s.amount,
       -- balances the producer did not have are stored as NULL: 0 here, and flagged in
       -- balances_missing so the features mark them unknown, as the scorer did
       COALESCE(s.old_balance_orig, 0), COALESCE(s.new_balance_orig, 0),
       COALESCE(s.old_balance_dest, 0), COALESCE(s.new_balance_dest, 0),
       COALESCE(s.is_unauthorized_overdraft, 0), COALESCE(s.dest_id, 0),
"""
_LABELLED = f"""{_COLUMNS}
       (f.label = 'FRAUD')::int, s.score, COALESCE(s.band, ''), COALESCE(s.model_version, ''),
       f.label, f.source, f.labelled_at, s.old_balance_orig IS NULL,
       COALESCE(s.ip_country, ''), COALESCE(s.ip_kind, 'unknown'), COALESCE(s.card_country, '')
  FROM feedback_labels f
  JOIN scored_transactions s USING (transaction_id)
 WHERE f.labelled_at >= %(start)s AND f.labelled_at < %(end)s"""
# Unlabelled transactions older than the label delay: no chargeback came, so legitimate.
_MATURED = f"""{_COLUMNS}
       0, s.score, COALESCE(s.band, ''), COALESCE(s.model_version, ''),
       'LEGIT', '{MATURED_SOURCE}', to_timestamp(s.event_ts) + %(delay)s,
       s.old_balance_orig IS NULL,
       COALESCE(s.ip_country, ''), COALESCE(s.ip_kind, 'unknown'), COALESCE(s.card_country, '')
  FROM scored_transactions s
 WHERE NOT EXISTS (SELECT 1 FROM feedback_labels f WHERE f.transaction_id = s.transaction_id)
   AND to_timestamp(s.event_ts) + %(delay)s >= %(start)s
   AND to_timestamp(s.event_ts) + %(delay)s < %(end)s"""
# The labelled users' other transactions, from the velocity horizon before their first
# labelled one to their last: what the scorer's per-user state held.
_CONTEXT = f"""{_COLUMNS}
       0, s.score, COALESCE(s.band, ''), COALESCE(s.model_version, ''),
       NULL, NULL, NULL::timestamptz, s.old_balance_orig IS NULL,
       COALESCE(s.ip_country, ''), COALESCE(s.ip_kind, 'unknown'), COALESCE(s.card_country, '')
  FROM scored_transactions s
  JOIN (SELECT s.user_id, min(s.event_ts) - {MAX_GAP_SECONDS} AS lo, max(s.event_ts) AS hi
          FROM feedback_labels f
          JOIN scored_transactions s USING (transaction_id)
         WHERE f.labelled_at >= %(start)s AND f.labelled_at < %(end)s
         GROUP BY s.user_id) u
    ON s.user_id = u.user_id AND s.event_ts >= u.lo AND s.event_ts <= u.hi"""
_ORDER = " ORDER BY 3, 1"


def window_bounds(window_days: int, as_of: datetime) -> tuple[datetime, datetime]:
    """Labels given in the last `window_days` days before `as_of` (0: every label)."""
    if window_days < 0:
        raise ValueError(f"collect_feedback.window_days must be >= 0, got {window_days}")
    start = as_of - timedelta(days=window_days) if window_days else datetime(1970, 1, 1, tzinfo=UTC)
    return start, as_of


def fetch_labels(
    database_url: str, start: datetime, end: datetime, label_delay_days: int | None = None
) -> list[tuple]:
    """The labelled, scored transactions in the window, with a label delay also the
    unlabelled ones that matured inside the window, then the context rows not already
    among them; in output order (timestamp, id)."""
    query, args = _LABELLED, {"start": start, "end": end}
    if label_delay_days is not None:
        query = f"{_LABELLED} UNION ALL {_MATURED}"
        args["delay"] = timedelta(days=label_delay_days)
    conn = connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query, args)
            labelled = cur.fetchall()
            cur.execute(_CONTEXT, args)
            context = cur.fetchall()
    finally:
        conn.close()
    known = {row[0] for row in labelled}
    rows = labelled + [row for row in context if row[0] not in known]
    return sorted(rows, key=lambda row: (row[2], row[0]))


_KIND_AT = FEEDBACK_COLUMNS.index("label_kind")


def with_kinds(rows: list[tuple]) -> list[tuple]:
    """Each row with its label kind inserted after the source (the query's rows hold every
    FEEDBACK_COLUMNS column but the kind); a context row has none."""
    return [(*row[:_KIND_AT], _kind(row[_KIND_AT - 1]), *row[_KIND_AT:]) for row in rows]


def _kind(source: str | None) -> str | None:
    return None if source is None else label_kind(source)


def to_table(rows: list[tuple]) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in FEEDBACK_COLUMNS]
    arrays = [pa.array(col, type=SCHEMA.field(i).type) for i, col in enumerate(columns)]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def summarise(table: pa.Table, window_days: int, source: str) -> dict[str, Any]:
    """The report: how many labels, of which fraud, and the span of their labelled_at
    (context rows are not labels). It is built from the data alone (no clock), so it is as
    stable as the Parquet file."""
    labelled_at = [t for t in table.column("labelled_at").to_pylist() if t is not None]
    fraud = sum(table.column(LABEL_COLUMN).to_pylist())
    return {
        "source": source,
        "count": len(labelled_at),
        "context": table.num_rows - len(labelled_at),
        "fraud": fraud,
        "legit": len(labelled_at) - fraud,
        "window_days": window_days,
        "window_start": min(labelled_at).isoformat() if labelled_at else None,
        "window_end": max(labelled_at).isoformat() if labelled_at else None,
    }


def write_atomic(path: Path, write) -> None:
    """Write through a temporary file and rename, so DVC never hashes half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    tmp.replace(path)


def collect_feedback(
    database_url: str | None,
    out: Path,
    report: Path,
    window_days: int,
    as_of: datetime | None = None,
    label_delay_days: int | None = None,
) -> dict[str, Any]:
    """Export the window's labels to `out`, their summary to `report`; returns the summary.

    `label_delay_days` None exports labels only; a number also exports the transactions
    that stayed unlabelled that long (as LEGIT, kind delayed)."""
    if database_url:
        start, end = window_bounds(window_days, as_of or datetime.now(UTC))
        table = to_table(with_kinds(fetch_labels(database_url, start, end, label_delay_days)))
        source = "postgres"
    else:
        log.warning("DATABASE_URL is not set: writing an empty feedback set to %s", out)
        table = to_table([])
        source = "none"
    write_atomic(Path(out), lambda p: pq.write_table(table, p, compression="snappy"))
    summary = summarise(table, window_days, source)
    text = json.dumps(summary, indent=2, sort_keys=True) + "\n"
    write_atomic(Path(report), lambda p: p.write_text(text))
    log.info("exported %d labels (%d fraud) to %s", summary["count"], summary["fraud"], out)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export analysts' labels for the next run.")
    parser.add_argument("--out", type=Path, required=True, help="Parquet file to write")
    parser.add_argument("--report", type=Path, default=Path("reports/feedback.json"))
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level)
    params = load_params(args.params, "collect_feedback")
    collect_feedback(
        settings.database_url,
        args.out,
        args.report,
        int(params["window_days"]),
        label_delay_days=int(params["label_delay_days"]),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
