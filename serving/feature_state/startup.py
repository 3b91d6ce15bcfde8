"""Which per-user feature state a scoring process uses, and its start-up check.

With `REDIS_URL` set, every process shares the Redis state; unset, each keeps its own in
memory and forgets it on restart. A process that starts on an empty state while Postgres
holds recently scored transactions warns and sets the
`fraudops_feature_store_missing_history_rows` gauge: those users would be scored as new
until `fraudops-features rebuild` replays them."""

from __future__ import annotations

import logging

from fraudops.db import connect
from fraudops.settings import Settings
from serving import metrics
from serving.feature_state.contract import TTL_SECONDS, FeatureState
from serving.feature_state.memory import MemoryFeatures
from serving.feature_state.redis_store import INLINE_TIMEOUT_SECONDS, RedisFeatures

log = logging.getLogger(__name__)

# The stream scorer and the rebuild send batches of thousands: a Redis call may take this
# long before it counts as an outage (a retry after a timeout is harmless: idempotent).
BATCH_TIMEOUT_SECONDS = 10.0


def open_feature_state(settings: Settings, timeout: float = INLINE_TIMEOUT_SECONDS) -> FeatureState:
    """The state named by the settings, logged (no connection is made yet to a single
    Redis; a cluster's client asks one of its nodes for the slots' layout at once)."""
    if settings.redis_url:
        log.info("per-user feature state: shared, in Redis")
        return RedisFeatures.from_url(
            settings.redis_url, timeout=timeout, partitions=settings.raw_partitions
        )
    log.info("per-user feature state: in this process's memory (REDIS_URL unset)")
    return MemoryFeatures()


def check_history(features: FeatureState, database_url: str | None) -> int:
    """Recent scored transactions missing from an empty state (0 when none or unknown);
    warns and sets the gauge. Never fails the start: a check that cannot run is logged."""
    missing = 0
    try:
        if database_url and features.is_empty():
            missing = recent_scored(database_url)
    except Exception as err:  # noqa: BLE001 - a start-up check must not stop the service
        log.warning("could not check the feature state against Postgres: %s", err)
    metrics.MISSING_HISTORY.set(missing)
    if missing:
        log.warning("the feature state is empty but Postgres holds %d transactions scored in "
                    "the last %d s: their users score as new; run fraudops-features rebuild",
                    missing, TTL_SECONDS)  # fmt: skip
    return missing


def recent_scored(database_url: str, seconds: int = TTL_SECONDS) -> int:
    conn = connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM scored_transactions "
                "WHERE scored_at > now() - make_interval(secs => %s)",
                (seconds,),
            )
            return cur.fetchone()[0]
    finally:
        conn.close()
