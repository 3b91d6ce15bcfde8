"""What a draft rule would have done over a period of stored scores, before it goes live.

The period's rows of scored_transactions are read back as the drift watch reads them
(fraudops.scored_rows: with the location the scorer stored and the users' earlier rows as
history, so velocity and location features are what the scorer saw), get their features
again from the one batch transform (fraudops.features.batch_features), and the rule is
evaluated by the same RuleSet code the scoring core runs, against the stored score and band.
The answer: how many it would catch in each model band, how many of those analysts labelled
fraud and legitimate, the value at stake, and the first matching transactions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

from fraudops.bands import BANDS
from fraudops.features import batch_features
from fraudops.rules import ListIndex, Rule, RuleSet
from fraudops.scored_rows import read_scored

MAX_ROWS = 500_000  # rows read (period and history); a longer period is refused
SHOWN = 100
# A stored score keeps its address only as the keyed hash (`ip_hash`): `ip_address` reads
# empty, an IP list's hashed addresses match by that hash, its networks cannot match.


class PeriodTooLarge(ValueError):
    pass


def backtest(cur, rule: Rule, start: datetime, end: datetime,
             lists: dict[str, ListIndex]) -> dict[str, Any]:  # fmt: skip
    """Run `rule` (as if live and alone) over the scores stored in [start, end)."""
    frame = read_scored(cur, start, end, limit=MAX_ROWS + 1)
    if len(frame) > MAX_ROWS:
        raise PeriodTooLarge(f"more than {MAX_ROWS} scores in the period and its users' history")
    in_period = frame["in_period"].to_numpy()
    features = batch_features(frame)[in_period]
    period = frame[in_period]
    txs = period.to_dict("records")
    scores = period["score"].to_numpy(dtype=float)
    bands = period["band"].map(BANDS.index).to_numpy(dtype=np.int64)
    live = Rule(rule.name, rule.action, rule.condition, "live")
    decisions = RuleSet("backtest", [live], lists).decide(txs, features, scores, bands)
    matched = [tx for tx, by in zip(txs, decisions.decided_by if decisions else [], strict=False)
               if by == rule.name]  # fmt: skip
    return _summary(matched, len(txs), start, end)


def _summary(matched: list[dict], considered: int, start: datetime, end: datetime) -> dict:
    by_band = {band: sum(tx["band"] == band for tx in matched) for band in BANDS}
    labelled = {label: sum(tx["label"] == label for tx in matched) for label in ("FRAUD", "LEGIT")}
    shown = ("transaction_id", "user_id", "type", "amount", "score", "band", "scored_at")
    return {
        "period_from": start.isoformat(),
        "period_to": end.isoformat(),
        "considered": considered,
        "matched": len(matched),
        "by_band": by_band,
        "labelled": labelled,
        "value": round(sum(tx["amount"] for tx in matched), 2),
        "fraud_value": round(sum(tx["amount"] for tx in matched if tx["label"] == "FRAUD"), 2),
        "transactions": [
            {**{k: tx[k] for k in shown}, "label": tx["label"] or None} for tx in matched[:SHOWN]
        ],
    }
