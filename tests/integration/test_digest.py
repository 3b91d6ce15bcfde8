"""The daily digest on a small seeded day (real Postgres)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import uuid
from datetime import date
from pathlib import Path

import pytest

from fraudops import db
from serving.labels import record_label

DAY = "2026-01-15"
CARD_LIKE_USER = 4111111111111111  # a user id that looks like a card number gets masked
# (id, user, hour, band, score, model_version, label)
SCORED = [
    ("a1", 1, 1, "ALLOW", 0.01, "v1", "LEGIT"),
    ("a2", 1, 2, "ALLOW", 0.20, "v1", "FRAUD"),  # missed fraud
    ("a3", 2, 3, "ALLOW", 0.05, "v1", None),
    ("a4", 2, 4, "ALLOW", 0.15, "v1", None),
    ("a5", 4, 13, "ALLOW", 0.33, "v2", None),
    ("a6", 4, 14, "ALLOW", 0.49, "v2", None),
    ("c1", CARD_LIKE_USER, 5, "CHALLENGE", 0.70, "v1", "FRAUD"),
    ("c2", 2, 15, "CHALLENGE", 0.60, "v2", None),
    ("b1", 3, 6, "BLOCK", 0.97, "v1", "FRAUD"),
    ("b2", 4, 16, "BLOCK", 0.90, "v2", "LEGIT"),
]
OTHER_DAYS = [("x-before", "2026-01-14 23:59:59+00"), ("x-after", "2026-01-16 00:00:00+00")]


@pytest.fixture(scope="module")
def seeded_day(database_url):
    """A database of this module's own holding one known day plus a neighbour each side."""
    name = f"digest_{uuid.uuid4().hex[:8]}"
    url = db.create_database(database_url, name)
    db.migrate(url)
    conn = db.connect(url)
    insert = (
        "INSERT INTO scored_transactions (transaction_id, user_id, event_ts, type, amount, score,"
        " band, model_version, source, latency_us, scored_at)"
        " VALUES (%s, %s, 1768435200, 'TRANSFER', 100.0, %s, %s, %s, 'stream', 500, %s)"
    )
    with conn, conn.cursor() as cur:
        for tx_id, user, hour, band, score, version, _ in SCORED:
            cur.execute(insert, (tx_id, user, score, band, version, f"{DAY} {hour:02d}:30:00+00"))
        for tx_id, at in OTHER_DAYS:
            cur.execute(insert, (tx_id, 9, 0.99, "BLOCK", "v0", at))
        cur.execute(
            "INSERT INTO model_deployments (version, mlflow_run_id, host, pid, served_from,"
            " served_until, reason) VALUES"
            " ('v0', 'r0', 'h', 1, '2026-01-01', '2026-01-10', 'startup'),"
            " ('v1', 'r1', 'h', 1, '2026-01-10', '2026-01-15 12:00+00', 'reload'),"
            " ('v2', 'r2', 'h', 1, '2026-01-15 12:00+00', NULL, 'reload')"
        )
    for tx_id, *_, label in SCORED:
        if label:
            record_label(conn, tx_id, label, "analyst:alice")
    record_label(conn, "x-after", "LEGIT", "analyst:alice")  # another day: not counted
    yield url
    conn.close()
    db.drop_database(database_url, name)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_the_digest_cli_writes_the_days_numbers(seeded_day, tmp_path, project_root):
    env = {**os.environ, "DATABASE_URL": seeded_day}
    command = [sys.executable, "-m", "jobs.digest", "--date", DAY]
    command += [
        "--out-dir",
        str(tmp_path / "digest"),
        "--params",
        str(project_root / "params.yaml"),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    day_dir = tmp_path / "digest" / DAY

    summary = {r["metric"]: r["value"] for r in read_csv(day_dir / "summary.csv")}
    assert summary["transactions"] == "10"
    assert summary["users"] == "5"
    assert (summary["band_allow"], summary["band_challenge"], summary["band_block"]) == (
        "6",
        "2",
        "2",
    )
    assert (summary["labelled"], summary["labelled_fraud"]) == ("5", "3")
    assert float(summary["fraud_rate_labelled"]) == pytest.approx(0.6)
    assert float(summary["precision_block"]) == pytest.approx(0.5)
    assert float(summary["precision_challenge"]) == pytest.approx(1.0)
    assert float(summary["fraud_caught_labelled"]) == pytest.approx(2 / 3, abs=1e-6)
    assert summary["model_versions"] == "v1,v2"

    scores = read_csv(day_dir / "scores.csv")
    assert len(scores) == 20
    assert sum(int(r["n"]) for r in scores) == 10
    top = read_csv(day_dir / "top_users.csv")
    assert top[0]["user_id"] == "3"
    assert top[0]["max_score"] == "0.97"
    assert "[PAN ****1111]" in [r["user_id"] for r in top]
    assert str(CARD_LIKE_USER) not in (day_dir / "top_users.csv").read_text()
    assert [r["version"] for r in read_csv(day_dir / "deployments.csv")] == ["v1", "v2"]
    assert {r["model_version"]: r["transactions"] for r in read_csv(day_dir / "models.csv")} == {
        "v1": "6",
        "v2": "4",
    }

    page = (day_dir / "index.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3
    assert "precision_block" in page
    assert str(CARD_LIKE_USER) not in page


def test_a_day_without_traffic_still_gets_a_page(seeded_day, tmp_path):
    from jobs.digest import build_digest, write_digest

    digest = build_digest(seeded_day, date(2025, 6, 1), top_users=5, bins=10, k=3)
    day_dir = write_digest(digest, tmp_path)
    assert digest.summary["transactions"] == 0
    assert digest.summary["precision_block"] is None
    assert (day_dir / "index.html").exists()


def test_without_a_database_the_cli_says_so(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    command = [sys.executable, "-m", "jobs.digest", "--date", DAY, "--out-dir", str(tmp_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "DATABASE_URL is not set" in result.stderr


def test_alert_precision_counts_the_days_top_k_and_the_queue_by_reason(seeded_day):
    from fraudops.review_queue import QueuePolicy
    from jobs.digest import build_digest
    from jobs.review_queue import build_queue

    # top 3 by score: b1 (FRAUD), b2 (LEGIT), c1 (FRAUD)
    digest = build_digest(seeded_day, date.fromisoformat(DAY), top_users=5, bins=10, k=3)
    summary = digest.summary
    assert (summary["alerts_top_k"], summary["alerts_labelled"]) == (3, 3)
    assert summary["alert_precision_at_k"] == pytest.approx(2 / 3, abs=1e-6)
    day, conn = date.fromisoformat(DAY), db.connect(seeded_day)
    try:
        policy = QueuePolicy(daily_budget=4, explore_share=0.5, random_share=0.5, seed=1)
        # among the unlabelled transactions that happened on the day (x-before too: the
        # queue goes by the payment's time, the digest by when it was scored)
        items = build_queue(conn, day, policy)
        explored = [q for q in items if q.reason != "exploit"]
        record_label(conn, explored[0].transaction_id, "FRAUD", "analyst:bob", queue_date=day)
        record_label(conn, explored[1].transaction_id, "LEGIT", "analyst:bob", queue_date=day)
        queued = build_digest(seeded_day, day, top_users=5, bins=10, k=3).summary
    finally:
        with conn, conn.cursor() as cur:  # leave the module's day as it was
            cur.execute("DELETE FROM review_queue")
            cur.execute("DELETE FROM feedback_labels WHERE queue_reason IS NOT NULL")
        conn.close()
    assert [q.transaction_id for q in items if q.reason == "exploit"] == ["x-before", "c2"]
    assert (queued["queue_exploit_items"], queued["queue_exploit_precision"]) == (2, None)
    assert [q.reason for q in explored] == ["explore-threshold", "explore-random"]
    assert (
        queued["queue_explore_threshold_labelled"],
        queued["queue_explore_threshold_precision"],
    ) == (1, 1.0)
    assert (queued["queue_explore_random_labelled"], queued["queue_explore_random_precision"]) == (
        1,
        0.0,
    )
