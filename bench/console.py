"""The analyst console at scale: queue pages and the transaction page with 1,000,000 rows
in scored_transactions (about 6% flagged, some labelled, 50,000 users), and how soon a
transaction the Kafka scorer scores reaches the live screen's stream while 2,000 tx/s flow.

`python -m bench.console [--rows N] [--requests N] [--rate N --seconds N]` creates a
database of its own on the dev stack's Postgres and topics of its own on its Kafka
(`fraudops.devstack up kafka postgres`), fills the table with one INSERT ... SELECT over
generate_series, runs the console (uvicorn) on a free loopback port and times HTTP requests
from a signed-in client (p50 / p95 in milliseconds); then it runs a scorer with the tiny
test model, produces raw transactions at the rate and measures, for every score the
stream delivers, the time from producing the transaction to receiving its score."""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import httpx
from confluent_kafka import Producer

from bench.common import transactions
from console import auth
from fraudops.db import connect
from fraudops.modelspec import publish
from fraudops.settings import Settings, load_settings
from tests.helpers.stack import (
    build_models,
    create_topics,
    delete_topics,
    free_port,
    fresh_database,
    python_process,
    wait_until,
)

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


def console_process(settings: Settings, log: Path):
    """The console's process (a context manager) and a check that it answers."""
    proc = python_process(["-m", "console", "serve"], settings, log)
    base_url = settings.console_url()

    def answers() -> bool:
        try:
            return httpx.get(f"{base_url}/api/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return proc, answers


def signed_in(settings: Settings) -> httpx.Client:
    client = httpx.Client(base_url=settings.console_url(), timeout=30)
    client.post("/api/auth/login", json={"name": "bench", "password": PASSWORD}).raise_for_status()
    return client


def read_stream(client: httpx.Client, arrivals: list[tuple[float, str]], stop: threading.Event,
                ready: threading.Event) -> None:  # fmt: skip
    """Record (arrival time, transaction id) of every score the live stream delivers."""
    with client.stream("GET", "/api/live/stream", timeout=None) as stream:
        event = None
        for line in stream.iter_lines():
            now = time.time()
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "ready":
                ready.set()
            elif line.startswith("data: ") and event == "tick":
                items = json.loads(line.removeprefix("data: "))["items"]
                arrivals.extend((now, item["transaction_id"]) for item in items)
            if stop.is_set():
                return


def produce_at(settings: Settings, rate: int, seconds: float) -> int:
    """Raw transactions at `rate` per second for `seconds`; each id carries its send time."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "linger.ms": 2})  # fmt: skip
    pool = transactions(rate, 5000, seed=1, prefix="x")
    sent, started, step = 0, time.time(), 0.01
    while time.time() - started < seconds:
        due = int((time.time() - started) * rate)
        for i in range(sent, due):
            msg = pool[i % len(pool)]
            msg.transaction_id = f"lv-{time.time_ns()}-{i}"
            producer.produce(settings.topic_raw, msg.SerializeToString(),
                             key=str(msg.user_id).encode())  # fmt: skip
            producer.poll(0)
        sent = due
        time.sleep(step)
    producer.flush(30)
    return sent


def live_latency(base: Settings, url: str, rate: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        built = build_models(tmp / "built")
        publish(built / "v2", tmp / "serving", "v2")
        topics = create_topics(base.kafka_bootstrap_servers, "bench-console")
        settings = replace(base, database_url=url, model_dir=tmp / "serving", **topics,
                           console_port=free_port(), log_level="WARNING",
                           consumer_group=f"bench-console-{uuid.uuid4().hex[:8]}")  # fmt: skip
        try:
            scorer = python_process(["-m", "serving.scorer"], settings, tmp / "scorer.log")
            console, answers = console_process(settings, tmp / "console.log")
            with scorer, console:
                wait_until(answers, "the console", 60)
                arrivals: list[tuple[float, str]] = []
                stop, ready = threading.Event(), threading.Event()
                client = signed_in(settings)
                args = (client, arrivals, stop, ready)
                reader = threading.Thread(target=read_stream, args=args, daemon=True)
                reader.start()
                ready.wait(60)
                produce_at(settings, rate, 10)  # warm-up: the scorer joins its group
                measured_from = time.time()
                sent = produce_at(settings, rate, seconds)
                time.sleep(3)
                stop.set()
        finally:
            delete_topics(base.kafka_bootstrap_servers, list(topics.values()))
    lags = [(at - int(tx.split("-")[1]) / 1e9) * 1000 for at, tx in arrivals
            if int(tx.split("-")[1]) / 1e9 >= measured_from]  # fmt: skip
    if len(lags) < 20:
        print(f"live: only {len(lags)} scores reached the stream")
        return
    cuts = statistics.quantiles(lags, n=100)
    print(
        f"live at {rate} tx/s for {seconds:.0f} s ({sent} sent, {len(lags)} shown): produce -> "
        f"stream p50 {statistics.median(lags):.0f} ms  p95 {cuts[94]:.0f} ms  "
        f"max {max(lags):.0f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rate", type=int, default=2000, help="live part: raw tx/s")
    parser.add_argument("--seconds", type=float, default=30, help="live part: measured span")
    args = parser.parse_args(argv)
    base = load_settings().with_local_services()
    with fresh_database(base.database_url, "fraudops_bench_console") as url:
        started = time.perf_counter()
        bands = fill(url, args.rows)
        print(f"filled {args.rows:,} rows in {time.perf_counter() - started:.0f} s: {bands}")
        settings = replace(base, database_url=url, console_port=free_port(), log_level="WARNING")
        console, answers = console_process(settings, Path(tempfile.gettempdir()) / "console.log")
        with console:
            wait_until(answers, "the console", 60)
            with contextlib.closing(signed_in(settings)) as client:
                for name, paths in scenarios(client, args.requests, args.rows).items():
                    p50, p95 = timed(client, paths)
                    print(f"{name:42s} p50 {p50:6.1f} ms   p95 {p95:6.1f} ms")
        live_latency(base, url, args.rate, args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
