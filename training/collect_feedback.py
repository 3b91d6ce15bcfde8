"""collect_feedback: the head of the pipeline that turns analysts' verdicts into data.

Exports the labels in `feedback_labels`, joined with the transactions exactly as they were
scored (raw fields, score, band, model version), to a Parquet file with
TRANSACTION_COLUMNS (is_fraud = the label) plus score, band, model_version, label,
label_source and labelled_at, sorted by timestamp. The file is byte-identical for the same
labels, so DVC sees no change and nothing downstream re-runs when no label arrived. A small
JSON report beside it (count and window) feeds train's MLflow run and the model.json.

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
from fraudops.params import DEFAULT_PARAMS, load_params
from fraudops.pii import configure_logging
from fraudops.schema import LABEL_COLUMN, NUMERIC_COLUMNS, TRANSACTION_COLUMNS
from fraudops.settings import load_settings

log = logging.getLogger("fraudops.collect_feedback")

FEEDBACK_COLUMNS: tuple[str, ...] = (
    *TRANSACTION_COLUMNS,
    "score",
    "band",
    "model_version",
    "label",
    "label_source",
    "labelled_at",
    "balances_missing",  # the producer had no balances (a card payment): not zeros
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
    "labelled_at": pa.timestamp("us", tz="UTC"),
    "balances_missing": pa.bool_(),
}
SCHEMA = pa.schema([pa.field(name, _TYPES[name], nullable=False) for name in FEEDBACK_COLUMNS])

# The row order is part of the output: ties on timestamp break on the id, so the same
# labels always give the same bytes.
_QUERY = """
SELECT s.transaction_id, s.user_id, s.event_ts, s.type, s.amount,
       -- balances the producer did not have are stored as NULL: 0 here, and flagged in
       -- balances_missing so the features mark them unknown, as the scorer did
       COALESCE(s.old_balance_orig, 0), COALESCE(s.new_balance_orig, 0),
       COALESCE(s.old_balance_dest, 0), COALESCE(s.new_balance_dest, 0),
       COALESCE(s.is_unauthorized_overdraft, 0), COALESCE(s.dest_id, 0),
       (f.label = 'FRAUD')::int, s.score, COALESCE(s.band, ''), COALESCE(s.model_version, ''),
       f.label, f.source, f.labelled_at, s.old_balance_orig IS NULL
  FROM feedback_labels f
  JOIN scored_transactions s USING (transaction_id)
 WHERE f.labelled_at >= %(start)s AND f.labelled_at < %(end)s
 ORDER BY s.event_ts, s.transaction_id
"""


def window_bounds(window_days: int, as_of: datetime) -> tuple[datetime, datetime]:
    """Labels given in the last `window_days` days before `as_of` (0: every label)."""
    if window_days < 0:
        raise ValueError(f"collect_feedback.window_days must be >= 0, got {window_days}")
    start = as_of - timedelta(days=window_days) if window_days else datetime(1970, 1, 1, tzinfo=UTC)
    return start, as_of


def fetch_labels(database_url: str, start: datetime, end: datetime) -> list[tuple]:
    """The labelled, scored transactions in the window, in output order."""
    conn = connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(_QUERY, {"start": start, "end": end})
            return cur.fetchall()
    finally:
        conn.close()


def to_table(rows: list[tuple]) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in FEEDBACK_COLUMNS]
    arrays = [pa.array(col, type=SCHEMA.field(i).type) for i, col in enumerate(columns)]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def summarise(table: pa.Table, window_days: int, source: str) -> dict[str, Any]:
    """The report: how many labels, of which fraud, and the span of their labelled_at.
    It is built from the data alone (no clock), so it is as stable as the Parquet file."""
    labelled_at = table.column("labelled_at").to_pylist()
    fraud = sum(table.column(LABEL_COLUMN).to_pylist())
    return {
        "source": source,
        "count": table.num_rows,
        "fraud": fraud,
        "legit": table.num_rows - fraud,
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
) -> dict[str, Any]:
    """Export the window's labels to `out`, their summary to `report`; returns the summary."""
    if database_url:
        start, end = window_bounds(window_days, as_of or datetime.now(UTC))
        table = to_table(fetch_labels(database_url, start, end))
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
    collect_feedback(settings.database_url, args.out, args.report, int(params["window_days"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
