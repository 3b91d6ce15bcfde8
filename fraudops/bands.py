"""Risk bands and human-readable reasons, from the thresholds and the `explain` block of a
model's model.json. Shared by evaluate (per-band metrics) and the scorer (responses)."""

from __future__ import annotations

from typing import Any

import numpy as np

from fraudops.features import FEATURE_NAMES, FEATURES

_BALANCE = np.array([i for i, f in enumerate(FEATURES) if f.balance_derived])
_PRESENT = FEATURE_NAMES.index("balances_present")
_LOCATION_LABELS = tuple(f.label for f in FEATURES if f.location)

ALLOW, CHALLENGE, BLOCK = "ALLOW", "CHALLENGE", "BLOCK"
BANDS = (ALLOW, CHALLENGE, BLOCK)


def bands_for(scores: np.ndarray, thresholds: dict[str, float]) -> np.ndarray:
    """Band index per score: 0 ALLOW, 1 CHALLENGE (>= challenge), 2 BLOCK (>= block)."""
    scores = np.asarray(scores, dtype=np.float64)
    return (scores >= thresholds["challenge"]).astype(np.int8) + (
        scores >= thresholds["block"]
    ).astype(np.int8)


def band_name(score: float, thresholds: dict[str, float]) -> str:
    if score >= thresholds["block"]:
        return BLOCK
    if score >= thresholds["challenge"]:
        return CHALLENGE
    return ALLOW


class Explainer:
    """Top signals of a score: each feature's standardised value times its weight in a
    linear surrogate fitted at training time (model.json `explain`: mean, std, weight).
    Cheap enough for the request path, and stable: the same input gives the same reasons."""

    def __init__(self, explain: dict[str, Any], top_k: int = 3):
        self.mean = np.asarray(explain["mean"], dtype=np.float32)
        self.scale = np.asarray(explain["weight"], dtype=np.float32) / np.maximum(
            np.asarray(explain["std"], dtype=np.float32), 1e-6
        )
        self.top_k = top_k

    def reasons(self, features: np.ndarray) -> list[list[str]]:
        """For each row of a (N, F) array, up to top_k reasons that raised the score."""
        features = np.atleast_2d(features)
        contrib = (features - self.mean) * self.scale
        unknown = features[:, _PRESENT] == 0
        if unknown.any():  # balances the transaction did not have are no signal of it
            contrib[np.ix_(unknown, _BALANCE)] = 0.0
        top = np.argsort(-contrib, axis=1)[:, : self.top_k]
        out = []
        for row, idx in zip(contrib, top, strict=True):
            out.append([f"{FEATURES[i].label} (+{row[i]:.1f})" for i in idx if row[i] > 0.5])
        return out


def location_reasons(reasons: list[list[str]], txs) -> list[list[str]]:
    """Reasons with a location signal told as the analyst needs it: "IP country BR, card
    issued in DE (+1.4)" in place of the feature's name (one such reason per transaction,
    the strongest; the others are the same story)."""
    out = reasons
    for n, row in enumerate(reasons):
        hits = [k for k, r in enumerate(row) if r.startswith(_LOCATION_LABELS)]
        if not hits:
            continue
        if out is reasons:
            out = list(reasons)
        strength = row[hits[0]][row[hits[0]].rfind(" (") :]
        told = describe_location(txs[n]) + strength
        out[n] = [told if k == hits[0] else r for k, r in enumerate(row) if k not in hits[1:]]
    return out


def describe_location(tx) -> str:
    """Where a transaction came from, in words: the IP's country (or its kind), the card's."""
    country, kind = tx.get("ip_country", ""), tx.get("ip_kind", "unknown")
    ip = f"IP country {country}" if country else f"IP address {kind}"
    card = tx.get("card_country", "")
    return f"{ip}, card issued in {card}" if card else ip
