"""What a draft rule would have done over a period of stored scores, before it goes live.

The period's rows of scored_transactions get their features again from the one batch
transform (fraudops.features.batch_features), with the week before the period as the users'
history so velocity is what the scorer saw, and the rule is evaluated by the same RuleSet
code the scoring core runs, against the stored score and band. The answer: how many it would
catch in each model band, how many of those analysts labelled fraud and legitimate, the value
at stake, and the first matching transactions."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np

from fraudops.bands import BANDS
from fraudops.features import MAX_GAP_SECONDS, batch_features
from fraudops.rules import ListIndex, Rule, RuleSet

MAX_ROWS = 500_000  # rows read (period and history); a longer period is refused
SHOWN = 100

_ROWS = (
    "SELECT s.transaction_id, s.user_id, s.event_ts, s.type, s.amount, s.old_balance_orig, "
    "s.new_balance_orig, s.old_balance_dest, s.new_balance_dest, s.is_unauthorized_overdraft, "
    "s.dest_id, s.channel, s.score, s.band, s.scored_at, f.label, "
    "s.scored_at >= %(start)s AS in_period, s.ip_country, s.card_country, s.billing_country, "
    "s.ip_hash "
    "FROM scored_transactions s LEFT JOIN feedback_labels f USING (transaction_id) "
    "WHERE s.scored_at >= %(history)s AND s.scored_at < %(end)s ORDER BY s.event_ts LIMIT %(max)s"
)
_KEYS = ("transaction_id", "user_id", "timestamp", "type", "amount", "old_balance_orig",
         "new_balance_orig", "old_balance_dest", "new_balance_dest", "is_unauthorized_overdraft",
         "dest_id", "channel", "score", "band", "scored_at", "label", "in_period",
         "ip_country", "card_country", "billing_country", "ip_hash")  # fmt: skip
# Where a stored score came from: its countries and the address's keyed hash, never the
# address (an IP list's hashed addresses match by that hash; its networks cannot match).
_LOCATION = ("ip_country", "card_country", "billing_country")


class PeriodTooLarge(ValueError):
    pass


def _transactions(rows: list[tuple]) -> list[dict[str, Any]]:
    txs = []
    for row in rows:
        tx = dict(zip(_KEYS, row, strict=True))
        tx["balances_missing"] = tx["old_balance_orig"] is None
        for key in _KEYS[5:10]:
            tx[key] = tx[key] or 0.0
        tx["dest_id"], tx["channel"] = tx["dest_id"] or 0, tx["channel"] or ""
        for key in _LOCATION:
            tx[key] = tx[key] or ""
        tx["ip_address"] = ""
        txs.append(tx)
    return txs


def backtest(cur, rule: Rule, start: datetime, end: datetime,
             lists: dict[str, ListIndex]) -> dict[str, Any]:  # fmt: skip
    """Run `rule` (as if live and alone) over the scores stored in [start, end)."""
    history = start - timedelta(seconds=MAX_GAP_SECONDS)
    cur.execute(_ROWS, {"start": start, "history": history, "end": end, "max": MAX_ROWS + 1})
    txs = _transactions(cur.fetchall())
    if len(txs) > MAX_ROWS:
        raise PeriodTooLarge(f"more than {MAX_ROWS} scores in the period and its history week")
    features = batch_features(
        {k: [tx[k] for tx in txs] for k in (*_KEYS[1:12], "balances_missing")}
    )
    keep = [i for i, tx in enumerate(txs) if tx["in_period"]]
    txs, features = [txs[i] for i in keep], features[keep]
    scores = np.array([tx["score"] for tx in txs], dtype=float)
    bands = np.array([BANDS.index(tx["band"]) for tx in txs], dtype=np.int64)
    live = Rule(rule.name, rule.action, rule.condition, "live")
    decisions = RuleSet("backtest", [live], lists).decide(txs, features, scores, bands)
    matched = [tx for tx, by in zip(txs, decisions.decided_by if decisions else [], strict=False)
               if by == rule.name]  # fmt: skip
    return _summary(matched, len(txs), start, end)


def _summary(matched: list[dict], considered: int, start: datetime, end: datetime) -> dict:
    by_band = {band: sum(tx["band"] == band for tx in matched) for band in BANDS}
    labelled = {label: sum(tx["label"] == label for tx in matched) for label in ("FRAUD", "LEGIT")}
    shown = ("transaction_id", "user_id", "type", "amount", "score", "band", "label", "scored_at")
    return {
        "period_from": start.isoformat(),
        "period_to": end.isoformat(),
        "considered": considered,
        "matched": len(matched),
        "by_band": by_band,
        "labelled": labelled,
        "value": round(sum(tx["amount"] for tx in matched), 2),
        "fraud_value": round(sum(tx["amount"] for tx in matched if tx["label"] == "FRAUD"), 2),
        "transactions": [{k: tx[k] for k in shown} for tx in matched[:SHOWN]],
    }
