"""The analyst console's read paths at scale: queue pages and the transaction page with
1,000,000 rows in scored_transactions (about 6% flagged, some labelled, 50,000 users).

`python -m bench.console [--rows N] [--requests N]` creates a database of its own on the
dev stack's Postgres (`fraudops.devstack up postgres`), fills it with one INSERT ...
SELECT over generate_series, runs the console uvicorn on a free loopback port, times
HTTP requests from a signed-in client (p50 / p95 in milliseconds) and drops the database."""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import replace

import httpx

from console import auth
from fraudops.db import connect
from fraudops.settings import load_settings
from tests.helpers.stack import free_port, fresh_database, python_process, wait_until

USERS = 50_000
PASSWORD = "bench-analyst-password"
_FILL = """
INSERT INTO scored_transactions (transaction_id, user_id, event_ts, type, amount, channel,
    score, band, model_version, reasons, latency_us, source, scored_at)
SELECT 'b-' || i, 1 + (i * 7919) %% %(users)s, 1767225600 + i * 3,
       (ARRAY['CASH_IN','CASH_OUT','DEBIT','PAYMENT','TRANSFER'])[1 + i %% 5],
       round((random() * 5000)::numeric, 2), 'web', s, CASE WHEN s >= 0.8 THEN 'BLOCK'
       WHEN s >= 0.5 THEN 'CHALLENGE' ELSE 'ALLOW' END, 'v' || (1 + i %% 3),
       '["amount drains the origin balance"]'::jsonb, 300,
       CASE WHEN i %% 4 = 0 THEN 'inline' ELSE 'stream' END,
       now() - make_interval(secs => (%(rows)s - i) * 0.5)
FROM (SELECT i, power(random(), 12) AS s FROM generate_series(1::bigint, %(rows)s) AS i) AS g
"""
_LABEL = """
INSERT INTO feedback_labels (transaction_id, label, source)
SELECT transaction_id, CASE WHEN random() < 0.3 THEN 'FRAUD' ELSE 'LEGIT' END, 'bench'
FROM scored_transactions WHERE band <> 'ALLOW' AND random() < 0.3
"""


def fill(url: str, rows: int) -> dict[str, int]:
    conn = connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(_FILL, {"rows": rows, "users": USERS})
            cur.execute(_LABEL)
            cur.execute("ANALYZE")
            cur.execute("SELECT band, count(*) FROM scored_transactions GROUP BY 1")
            bands = dict(cur.fetchall())
        auth.add_user(conn, "bench", "analyst", PASSWORD)
    finally:
        conn.close()
    return bands


def timed(client: httpx.Client, paths: list[str]) -> tuple[float, float]:
    """p50 and p95 in milliseconds of GETs of `paths` (after one warm-up each kind)."""
    client.get(paths[0]).raise_for_status()
    spent = []
    for path in paths:
        started = time.perf_counter()
        client.get(path).raise_for_status()
        spent.append((time.perf_counter() - started) * 1000)
    cuts = statistics.quantiles(spent, n=20)
    return statistics.median(spent), cuts[18]


def scenarios(client: httpx.Client, n: int, rows: int) -> dict[str, list[str]]:
    rng = random.Random(0)
    page = client.get("/api/queue", params={"limit": 50}).json()
    deep = page["next_cursor"]
    for _ in range(20):  # the cursor of page 21
        deep = client.get("/api/queue", params={"limit": 50, "cursor": deep}).json()["next_cursor"]
    return {
        "queue, first page by score": ["/api/queue?limit=50"] * n,
        "queue, first page newest": ["/api/queue?limit=50&sort=newest"] * n,
        "queue, page 21 by score": [f"/api/queue?limit=50&cursor={deep}"] * n,
        "queue, BLOCK + TRANSFER + amount>=1000": [
            "/api/queue?limit=50&band=BLOCK&type=TRANSFER&amount_min=1000"
        ] * n,
        "queue, search by user id": [
            f"/api/queue?q={rng.randint(1, USERS)}&labelled=any" for _ in range(n)
        ],
        "transaction page": [f"/api/transactions/b-{rng.randint(1, rows)}" for _ in range(n)],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args(argv)
    base = load_settings().with_local_services()
    with fresh_database(base.database_url, "fraudops_bench_console") as url:
        started = time.perf_counter()
        bands = fill(url, args.rows)
        print(f"filled {args.rows:,} rows in {time.perf_counter() - started:.0f} s: {bands}")
        settings = replace(base, database_url=url, console_port=free_port(), log_level="WARNING")
        log = f"/tmp/bench-console-{settings.console_port}.log"
        with python_process(["-m", "console", "serve"], settings, log):
            base_url = settings.console_url()

            def answers() -> bool:
                try:
                    return httpx.get(f"{base_url}/api/health", timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(answers, "the console", 60)
            with httpx.Client(base_url=base_url, timeout=30) as client:
                login = {"name": "bench", "password": PASSWORD}
                client.post("/api/auth/login", json=login).raise_for_status()
                for name, paths in scenarios(client, args.requests, args.rows).items():
                    p50, p95 = timed(client, paths)
                    print(f"{name:42s} p50 {p50:6.1f} ms   p95 {p95:6.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
