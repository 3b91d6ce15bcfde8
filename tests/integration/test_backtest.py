"""A backtest on real Postgres of rules on location features: the stored rows are read back
with the location the scorer stored, and with their users' earlier rows as history, so a
rule on a location feature matches what it would have matched live; the counts agree with
queries written here independently."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fraudops import backtest
from fraudops.db import connect
from fraudops.rules import Rule
from testkit.stack import fresh_database
from tests.helpers.console_env import insert_rows
from tests.helpers.serving_env import query

NOW = datetime.now(UTC).replace(microsecond=0)
START, END = NOW - timedelta(hours=1), NOW + timedelta(minutes=1)
# Every location the scorer may store: known and matching, differing, Namibia ("NA", not a
# missing value), unknown (NULL), a private address; per user, a first country and a repeat.
LOCATED = [  # (user, seconds before NOW, ip_country, ip_kind, card_country, band)
    (1, 2 * 86400, "DE", "public", "DE", "ALLOW"),  # history: before the period
    (1, 1200, "BR", "public", "DE", "BLOCK"),
    (1, 1100, "DE", "public", "DE", "ALLOW"),
    (1, 1000, "BR", "public", "DE", "CHALLENGE"),
    (2, 900, "NA", "public", "NA", "ALLOW"),
    (2, 800, "NA", "public", "DE", "BLOCK"),
    (2, 700, "FR", "public", None, "ALLOW"),
    (3, 600, None, None, "US", "ALLOW"),
    (4, 3 * 86400, "US", "public", "US", "ALLOW"),  # history
    (4, 500, "US", "public", "CA", "CHALLENGE"),
    (5, 400, None, "private", "GB", "ALLOW"),
]
IN_PERIOD = "scored_at >= %(start)s AND scored_at < %(end)s"


@pytest.fixture
def url(postgres_server_url):
    with fresh_database(postgres_server_url, "fraudops_backtest") as url:
        insert_rows(url, [_row(*located) for located in LOCATED])
        yield url


def _row(user, ago, ip_country, ip_kind, card_country, band) -> dict:
    at = NOW - timedelta(seconds=ago)
    return {"user_id": user, "event_ts": int(at.timestamp()), "scored_at": at, "band": band,
            "ip_country": ip_country, "ip_kind": ip_kind, "card_country": card_country}  # fmt: skip


def run(url: str, condition: str) -> dict:
    conn = connect(url)
    try:
        with conn, conn.cursor() as cur:
            return backtest.backtest(cur, Rule("r", "review", condition), START, END, {})
    finally:
        conn.close()


def expected(url: str, where: str) -> dict[str, int]:
    rows = query(url, f"SELECT band, count(*) FROM scored_transactions s WHERE {IN_PERIOD} "
                 f"AND {where} GROUP BY band", {"start": START, "end": END})  # fmt: skip
    return {band: dict(rows).get(band, 0) for band in ("ALLOW", "CHALLENGE", "BLOCK")}


def test_a_rule_on_the_ip_and_card_countries_differing_counts_the_stored_locations(url):
    result = run(url, "ip_card_country_mismatch > 0.5")
    want = expected(url, "ip_country IS NOT NULL AND card_country IS NOT NULL "
                    "AND ip_country <> card_country")  # fmt: skip
    assert result["by_band"] == want
    assert result["matched"] == sum(want.values()) == 4
    assert result["considered"] == len(LOCATED) - 2


def test_a_rule_on_a_new_ip_country_reads_the_users_earlier_rows(url):
    result = run(url, "ip_country_new > 0.5")
    want = expected(url, "ip_country IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "
                    "scored_transactions e WHERE e.user_id = s.user_id AND e.event_ts < "
                    "s.event_ts AND e.ip_country = s.ip_country)")  # fmt: skip
    assert result["by_band"] == want
    assert result["matched"] == sum(want.values()) == 3  # user 1 BR; user 2 NA, FR


def test_a_rule_on_a_private_address_and_the_unknown_country(url):
    result = run(url, "ip_not_public > 0.5 && ip_country_known < 0.5")
    assert result["by_band"] == expected(url, "ip_kind = 'private' AND ip_country IS NULL")
    assert [t["user_id"] for t in result["transactions"]] == [5]
    assert result["transactions"][0]["label"] is None


def test_a_rule_on_the_stored_countries_and_a_feature_reads_namibia_as_a_country(url):
    result = run(url, "ip_country == 'NA' && ip_card_country_mismatch > 0.5")
    assert result["by_band"] == expected(url, "ip_country = 'NA' AND card_country <> 'NA'")
    assert [t["user_id"] for t in result["transactions"]] == [2]
