"""What every per-user feature state promises (`FeatureState`), and the bounds they share.

The features a transaction gets are those `fraudops.features.batch_features` gives it over
its user's transactions that have arrived so far, itself last: windows count earlier
events with a timestamp in (ts - window, ts], ties that arrived before it included, and the
gap is to the latest earlier event at or before ts. In time order that is exactly the
batch transform. A late event (older than the user's newest) is counted against the
events before it in time, and the events after it count it once they come. A
transaction_id seen before (per user) gets the velocity features of its first scoring and
is not counted again: redelivery, retry, or inline then Kafka.

A state keeps a user's events for RETENTION_SECONDS behind the newest, so an event up to
LATENESS_SECONDS late gets exact batch features and a repeat is recognised for as long as
its event is kept. Older events are dropped once the oldest is TRIM_SLACK_SECONDS older
still, so a history is rewritten about once an hour of event time, not on every event."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from fraudops.features import (
    MAX_GAP_SECONDS,
    WINDOWS_SECONDS,
    LocationHistory,
    location_features,
    static_matrix,
)

LATENESS_SECONDS = 86400  # how late an event may be and still get exact batch features
RETENTION_SECONDS = max(WINDOWS_SECONDS) + LATENESS_SECONDS
TRIM_SLACK_SECONDS = 3600
# After this long without an event a user reads as "never seen" anyway: the state may
# forget the user.
TTL_SECONDS = max(WINDOWS_SECONDS) + MAX_GAP_SECONDS
NO_HISTORY = [0.0] * (2 * len(WINDOWS_SECONDS)) + [math.log1p(MAX_GAP_SECONDS)]


class FeatureStateUnavailable(RuntimeError):
    """The shared feature state could not be read or updated; nothing was recorded."""


class FeatureState(Protocol):
    """Per-user history for scoring: features of transactions, each recorded as it is
    scored (see the module docstring for the semantics every implementation has)."""

    # Whether updates are atomic across callers (and processes) by themselves; a state
    # that is not shared needs its callers to serialise their calls.
    shared: bool

    def transform(self, tx: Mapping) -> np.ndarray:
        """Features of one transaction (float32, FEATURE_NAMES order); records it."""
        ...

    def transform_many(self, txs: Sequence[Mapping]) -> np.ndarray:
        """Features of a micro-batch (N, F), as if its transactions came one by one."""
        ...

    def record(self, txs: Sequence[Mapping]) -> None:
        """Record transactions without computing their features (a rebuild)."""
        ...

    def history(self, user_id: int) -> list[tuple[str, int, float]]:
        """A user's kept (transaction_id, timestamp, amount), in time order."""
        ...

    def is_empty(self) -> bool:
        """Whether no user has any history."""
        ...


def features_without_history(txs: Sequence[Mapping]) -> np.ndarray:
    """Features of transactions as if their users had never been seen: the answer the
    inline path gives when the shared state is unreachable."""
    velocity = np.tile(np.asarray(NO_HISTORY), (len(txs), 1))
    location = location_features(
        [LocationHistory().record(int(tx["timestamp"]), tx.get("ip_country", "")) for tx in txs]
    )
    return np.hstack([static_matrix(txs), velocity, location]).astype(np.float32)
