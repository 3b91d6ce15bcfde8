"""Which per-user feature state a scoring process uses, its start-up check, and the
`fraudops-features` command that rebuilds the shared state from Postgres.

With `REDIS_URL` set, every process shares the Redis state (fraudops.feature_store);
unset, each keeps its own in memory and forgets it on restart. A process that starts on an
empty state while Postgres holds recently scored transactions warns and sets the
`fraudops_feature_store_missing_history_rows` gauge: those users would be scored as new
until `fraudops-features rebuild` replays them."""

from __future__ import annotations

import argparse
import logging
import re
import sys

import psycopg2

from fraudops.feature_store import (
    INLINE_TIMEOUT_SECONDS,
    TTL_SECONDS,
    FeatureStateUnavailable,
    RedisFeatures,
)
from fraudops.features import OnlineFeatures
from fraudops.pii import configure_logging
from fraudops.settings import Settings, load_settings
from serving import metrics
from serving.db import connect

log = logging.getLogger(__name__)

REBUILD_BATCH = 5000
# The stream scorer and the rebuild send batches of thousands: a Redis call may take this
# long before it counts as an outage (a retry after a timeout is harmless: idempotent).
BATCH_TIMEOUT_SECONDS = 10.0
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def open_feature_state(
    settings: Settings, timeout: float = INLINE_TIMEOUT_SECONDS
) -> OnlineFeatures | RedisFeatures:
    """The state named by the settings (no connection is made yet), logged."""
    if settings.redis_url:
        log.info("per-user feature state: shared, in Redis")
        return RedisFeatures.from_url(settings.redis_url, timeout=timeout)
    log.info("per-user feature state: in this process's memory (REDIS_URL unset)")
    return OnlineFeatures()


def _is_empty(features: OnlineFeatures | RedisFeatures) -> bool:
    return features.is_empty() if isinstance(features, RedisFeatures) else len(features) == 0


def check_history(features: OnlineFeatures | RedisFeatures, database_url: str | None) -> int:
    """Recent scored transactions missing from an empty state (0 when none or unknown);
    warns and sets the gauge. Never fails the start: a check that cannot run is logged."""
    missing = 0
    try:
        if database_url and _is_empty(features):
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


def rebuild(features: RedisFeatures, database_url: str, since_seconds: int) -> int:
    """Replay every transaction scored in the last `since_seconds` into the state, in event
    time order; returns how many rows were replayed. Transactions already in the state are
    not counted again, so a rebuild over a partial state fills in only what is missing."""
    conn = connect(database_url)
    replayed = 0
    try:
        with conn, conn.cursor(name="feature_rebuild") as cur:
            cur.itersize = REBUILD_BATCH
            cur.execute(
                "SELECT transaction_id, user_id, event_ts, amount FROM scored_transactions "
                "WHERE scored_at > now() - make_interval(secs => %s) "
                "ORDER BY event_ts, scored_at, transaction_id",
                (since_seconds,),
            )
            while rows := cur.fetchmany(REBUILD_BATCH):
                features.record([
                    {"transaction_id": t, "user_id": u, "timestamp": ts, "amount": a}
                    for t, u, ts, a in rows
                ])  # fmt: skip
                replayed += len(rows)
    finally:
        conn.close()
    return replayed


def parse_duration(text: str) -> int:
    """'7d', '36h', '90m', '600s' (or plain seconds) -> seconds."""
    match = re.fullmatch(r"(\d+)([smhd]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 7d, 36h or 90m")
    return int(match[1]) * _UNITS[match[2] or "s"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fraudops per-user online feature state")
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("rebuild", help="replay recent scored transactions from Postgres")
    cmd.add_argument("--since", type=parse_duration, default="7d", help="e.g. 7d, 36h")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level)
    if not settings.redis_url or not settings.database_url:
        print("fraudops-features needs REDIS_URL and DATABASE_URL", file=sys.stderr)
        return 2
    features = RedisFeatures.from_url(settings.redis_url, timeout=BATCH_TIMEOUT_SECONDS)
    try:
        replayed = rebuild(features, settings.database_url, args.since)
    except (psycopg2.Error, FeatureStateUnavailable) as err:
        print(f"rebuild failed: {err}", file=sys.stderr)
        return 1
    log.info("replayed %d scored transactions of the last %d s into the feature state",
             replayed, args.since)  # fmt: skip
    print(f"replayed {replayed} transactions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
