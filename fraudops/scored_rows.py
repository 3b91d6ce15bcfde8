"""Stored scores read back as the frame the batch feature transform takes, for whatever
recomputes features over a period of scored_transactions (the drift watch, a rule's backtest).

A row gets its features again only as the scorer computed them if it comes back with what
the scorer saw: the fields, whether the producer had balances (a stored NULL), the location
the scorer derived and stored (the location features are computed from it; the address only
as its keyed hash, which IP lists match), and its user's earlier rows as far back as a
feature looks (the velocity windows, the gap since the previous transaction, the countries
seen). Unknown comes back as the scorer holds it in a transaction:
an empty country, an `unknown` address kind, zero balances flagged missing.

The table is read with COPY into pandas: a million rows take seconds this way, two to three
times less than through a cursor's Python tuples."""

from __future__ import annotations

import io
from datetime import datetime

import pandas as pd

from fraudops.features import MAX_GAP_SECONDS, WINDOWS_SECONDS

# The batch transform needs a user's rows as far back as any feature looks: the velocity
# windows, and the gap since the previous transaction (capped at MAX_GAP_SECONDS).
HORIZON_SECONDS = max(*WINDOWS_SECONDS, MAX_GAP_SECONDS)
# The period's rows and every row of the same users from HORIZON_SECONDS before their first
# to their last, in the order the scorer saw them (within a user: by event time, ties in
# scoring order), with the analysts' label where there is one ("" where none).
_ROWS = """
COPY (
  WITH period AS (
    SELECT user_id, event_ts FROM scored_transactions
     WHERE scored_at >= %(start)s AND scored_at < %(end)s),
  users AS (SELECT user_id, min(event_ts) - %(horizon)s AS lo, max(event_ts) AS hi
              FROM period GROUP BY user_id)
  SELECT s.transaction_id, s.user_id, s.event_ts AS timestamp, s.type, s.amount,
         coalesce(s.old_balance_orig, 0) AS old_balance_orig,
         coalesce(s.new_balance_orig, 0) AS new_balance_orig,
         coalesce(s.old_balance_dest, 0) AS old_balance_dest,
         coalesce(s.new_balance_dest, 0) AS new_balance_dest,
         coalesce(s.is_unauthorized_overdraft, 0) AS is_unauthorized_overdraft,
         s.old_balance_orig IS NULL AS balances_missing,  -- stored NULL: the producer had none
         coalesce(s.dest_id, 0) AS dest_id, coalesce(s.channel, '') AS channel,
         coalesce(s.ip_country, '') AS ip_country, coalesce(s.ip_kind, 'unknown') AS ip_kind,
         coalesce(s.card_country, '') AS card_country,
         coalesce(s.billing_country, '') AS billing_country, coalesce(s.ip_hash, '') AS ip_hash,
         s.score, s.band, s.scored_at, coalesce(f.label, '') AS label,
         (s.scored_at >= %(start)s AND s.scored_at < %(end)s) AS in_period
    FROM scored_transactions s JOIN users u USING (user_id)
    LEFT JOIN feedback_labels f USING (transaction_id)
   WHERE s.event_ts BETWEEN u.lo AND u.hi
   ORDER BY s.event_ts, s.scored_at, s.transaction_id
   LIMIT %(limit)s
) TO STDOUT WITH (FORMAT csv, HEADER)
"""
_TEXT = ("transaction_id", "type", "channel", "ip_country", "ip_kind", "card_country",
         "billing_country", "ip_hash", "band", "label")  # fmt: skip


def read_scored(cur, start: datetime, end: datetime, limit: int | None = None) -> pd.DataFrame:
    """The rows scored in [start, end) (`in_period`) and their users' earlier rows within
    HORIZON_SECONDS, at most `limit` rows (None: all), on the caller's cursor."""
    query = cur.mogrify(_ROWS, {"start": start, "end": end, "horizon": HORIZON_SECONDS,
                                "limit": limit})  # fmt: skip
    buf = io.BytesIO()
    cur.copy_expert(query.decode(), buf)
    buf.seek(0)
    # round_trip: the fast float parser can be one ulp off, and a balance error that is
    # exactly zero in the scorer must stay zero here. No cell is read as missing (every
    # column is coalesced above): pandas' default list would read Namibia's "NA" as one.
    frame = pd.read_csv(
        buf,
        dtype=dict.fromkeys(_TEXT, str),
        float_precision="round_trip",
        keep_default_na=False,
    )
    # Parsed after the read: read_csv's own date parsing is several times slower.
    frame["scored_at"] = pd.to_datetime(frame["scored_at"], format="ISO8601")
    for flag in ("in_period", "balances_missing"):  # COPY writes booleans as t / f
        frame[flag] = frame[flag].astype(str).str.lower().isin(("t", "true"))
    return frame
