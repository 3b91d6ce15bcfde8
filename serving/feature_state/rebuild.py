"""`fraudops-features rebuild`: refill the shared feature state from the transactions
Postgres holds as scored (after Redis lost its data, or for a new Redis)."""

from __future__ import annotations

import argparse
import logging
import re
import sys

import psycopg2

from fraudops.db import connect
from fraudops.pii import configure_logging
from fraudops.settings import load_settings
from serving.feature_state.contract import FeatureState, FeatureStateUnavailable
from serving.feature_state.startup import BATCH_TIMEOUT_SECONDS, open_feature_state

log = logging.getLogger(__name__)

REBUILD_BATCH = 5000
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def rebuild(features: FeatureState, database_url: str, since_seconds: int) -> int:
    """Replay every transaction scored in the last `since_seconds` into the state, in event
    time order, with the IP country it was scored with (the user's countries are state too);
    returns how many rows were replayed. Transactions already in the state are
    not counted again, so a rebuild over a partial state fills in only what is missing."""
    conn = connect(database_url)
    replayed = 0
    try:
        with conn, conn.cursor(name="feature_rebuild") as cur:
            cur.itersize = REBUILD_BATCH
            cur.execute(
                "SELECT transaction_id, user_id, event_ts, amount, coalesce(ip_country, '') "
                "FROM scored_transactions "
                "WHERE scored_at > now() - make_interval(secs => %s) "
                "ORDER BY event_ts, scored_at, transaction_id",
                (since_seconds,),
            )
            while rows := cur.fetchmany(REBUILD_BATCH):
                features.record([
                    {"transaction_id": t, "user_id": u, "timestamp": ts, "amount": a,
                     "ip_country": country}
                    for t, u, ts, a, country in rows
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
    features = open_feature_state(settings, BATCH_TIMEOUT_SECONDS)
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
