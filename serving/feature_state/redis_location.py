"""The location half of the Redis feature state: the user's countries (redis_location.lua,
the rule of `fraudops.features.LocationHistory`), on a key of its own beside the velocity
history (`<history key>:geo`, same hash tag, so the same cluster slot). `RedisFeatures`
sends this script with the velocity script on one connection, in one round trip."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from fraudops.features import COUNTRY_WINDOW_SECONDS, location_features
from serving.feature_state.contract import RETENTION_SECONDS, TRIM_SLACK_SECONDS, TTL_SECONDS

SCRIPT = Path(__file__).with_name("redis_location.lua").read_text()
SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
_FIXED = [RETENTION_SECONDS, TRIM_SLACK_SECONDS, TTL_SECONDS, COUNTRY_WINDOW_SECONDS]


def location_command(
    txs: Sequence[Mapping], key_of: Callable[[int], str]
) -> tuple[str, str, list[str], list]:
    """(sha, script, KEYS, ARGV) of the location script for `txs`."""
    keys = [f"{key_of(int(tx['user_id']))}:geo" for tx in txs]
    lines = "".join(
        f"{int(tx['timestamp'])}\t{tx.get('ip_country', '')}\t{tx['transaction_id']}\n"
        for tx in txs
    )
    return SHA, SCRIPT, keys, [*_FIXED, lines]


def location_of(raw: Sequence[bytes]) -> np.ndarray:
    """The script's replies ("new distinct") as location features."""
    return location_features(np.array(b" ".join(raw).split(), dtype=np.float64))
