"""The analyst console at scale: queue pages and the transaction page with 1,000,000 rows
in scored_transactions (about 6% flagged, some labelled, 50,000 users), and how soon a
transaction the Kafka scorer scores reaches the live screen's stream while 2,000 tx/s flow.

`python -m bench.console [--rows N] [--requests N] [--rate N --seconds N]` creates a
database of its own on the dev stack's Postgres and topics of its own on its Kafka
(`devstack up kafka postgres`), fills the table with one INSERT ... SELECT over
generate_series, runs the console (uvicorn) on a free loopback port and times HTTP requests
from a signed-in client (p50 / p95 in milliseconds); then it runs a scorer with the tiny
test model, produces raw transactions at the rate and measures, for every score the
stream delivers, the time from producing the transaction to receiving its score, and where
that time goes: until the scorer scored it (its `scored_at`), until a consumer of the scores
topic configured like the console's reads it, and from there to the stream.

`--database NAME` keeps the filled database under that name (filled only when it holds
fewer than `--rows` rows; the live part's rows are deleted afterwards), and `--fill-only`
stops after filling: the slow fill can run niced, outside a timing lock, and the timed
parts later, against the same million rows."""

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
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from bench.common import transactions
from console import auth, live
from devstack import with_local_kafka_login
from fraudops import db
from fraudops.db import connect
from fraudops.modelspec import publish
from fraudops.settings import Settings, load_settings
from testkit.redis_server import RedisServer
from testkit.stack import (
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


def fill(url: str, rows: int) -> dict[str, int] | None:
    """Fill a database holding fewer than `rows` seeded rows; None when it holds them."""
    conn = connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM scored_transactions WHERE transaction_id LIKE 'b-%'")
            if cur.fetchone()[0] >= rows:
                return None
            cur.execute("TRUNCATE scored_transactions CASCADE")
            cur.execute("DELETE FROM console_users WHERE name = 'bench'")
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
    producer = Producer(settings.kafka_config(**{"linger.ms": 2}))
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


def tap_scores(settings: Settings, seen: dict[str, tuple[float, int]], stop: threading.Event,
               ready: threading.Event) -> None:  # fmt: skip
    """Beside the console: a consumer of the scores topic that reads like the console's,
    recording when each score is readable on Kafka and the scorer's `scored_at` (ms)."""
    consumer = live.stream_consumer(settings)
    ready.set()
    try:
        while not stop.is_set():
            events = live.read_scores(consumer)
            now = time.time()
            for event in events:
                seen[event["transaction_id"]] = (now, event["scored_at_ms"])
    finally:
        consumer.close()


# Every row the live table gains, with the browser's clock: in the DOM, before the next paint.
_OBSERVE_ROWS = """
window.benchRows = [];
new MutationObserver((records) => {
  const now = Date.now();
  for (const r of records) for (const n of r.addedNodes)
    if (n.nodeType === 1) window.benchRows.push([now, n.querySelector("a")?.textContent]);
}).observe(document.querySelector("[data-testid=live-table] tbody"), { childList: true });
"""


@contextlib.contextmanager
def live_screen(settings: Settings) -> Iterator[Any]:
    """Debian's headless Chromium signed in on the live screen, recording its new rows."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1440,1000"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(settings.console_url() + "/")
        wait = WebDriverWait(driver, 60)
        wait.until(ec.presence_of_element_located((By.ID, "name"))).send_keys("bench")
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        connected = (By.CSS_SELECTOR, "[data-testid=live-connected]")
        wait.until(ec.text_to_be_present_in_element(connected, "connected"))
        driver.execute_script(_OBSERVE_ROWS)
        yield driver
    finally:
        driver.quit()


def _sent_at(transaction_id: str) -> float:
    """When produce_at sent it: its id is lv-<time_ns>-<n>."""
    return int(transaction_id.split("-")[1]) / 1e9


def _pcts(values: list[float]) -> str:
    cuts = statistics.quantiles(values, n=100)
    return f"p50 {statistics.median(values):5.0f}  p95 {cuts[94]:5.0f}  max {max(values):5.0f} ms"


def _histogram(metrics_url: str, name: str) -> str:
    """Mean and the share above 50 ms of a Prometheus histogram the scorer serves."""
    text = httpx.get(metrics_url, timeout=5).text
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        values = {(s.name, s.labels.get("le")): s.value for s in family.samples}
        count, total = values[(f"{name}_count", None)], values[(f"{name}_sum", None)]
        slow = count - values[(f"{name}_bucket", "0.05")]
        return f"{count:.0f} batches, mean {total / max(count, 1) * 1000:.1f} ms, >50 ms {slow:.0f}"
    return "not reported"


def _written_at(url: str) -> dict[str, float]:
    """When the scorer's transaction wrote each live row (its scored_at), then delete them."""
    conn = connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT transaction_id, extract(epoch FROM scored_at) "
                        "FROM scored_transactions WHERE transaction_id LIKE 'lv-%'")  # fmt: skip
            written = {tx: float(at) for tx, at in cur.fetchall()}
            for table in ("feature_samples", "scored_transactions"):
                cur.execute(f"DELETE FROM {table} WHERE transaction_id LIKE 'lv-%'")
    finally:
        conn.close()
    return written


def live_latency(base: Settings, url: str, rate: int, seconds: float, browser: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        built = build_models(tmp / "built")
        publish(built / "v2", tmp / "serving", "v2")
        topics = create_topics(base, "bench-console")
        redis_server = RedisServer(tmp / "redis").start()  # the scorer's feature state
        settings = replace(base, database_url=url, model_dir=tmp / "serving", **topics,
                           console_port=free_port(), log_level="WARNING",
                           redis_url=redis_server.url,
                           consumer_group=f"bench-console-{uuid.uuid4().hex[:8]}")  # fmt: skip
        metrics_port = free_port()
        try:
            scorer = python_process(["-m", "serving.scorer", "--metrics-port", str(metrics_port)],
                                    settings, tmp / "scorer.log")  # fmt: skip
            console, answers = console_process(settings, tmp / "console.log")
            with scorer, console:
                wait_until(answers, "the console", 60)
                arrivals: list[tuple[float, str]] = []
                tapped: dict[str, tuple[float, int]] = {}
                stop, ready, tap_ready = threading.Event(), threading.Event(), threading.Event()
                client = signed_in(settings)
                threads = [
                    threading.Thread(target=read_stream, args=(client, arrivals, stop, ready)),
                    threading.Thread(target=tap_scores, args=(settings, tapped, stop, tap_ready)),
                ]
                for thread in threads:
                    thread.start()
                ready.wait(60)
                tap_ready.wait(60)
                screen = live_screen(settings) if browser else contextlib.nullcontext()
                with screen as driver:
                    produce_at(settings, rate, 10)  # warm-up: the scorer joins its group
                    measured_from = time.time()
                    sent = produce_at(settings, rate, seconds)
                    time.sleep(3)
                    rows = driver.execute_script("return window.benchRows") if driver else []
                durable = _histogram(f"http://127.0.0.1:{metrics_port}/metrics",
                                     "fraudops_scorer_durable_seconds")  # fmt: skip
                batches = _histogram(f"http://127.0.0.1:{metrics_port}/metrics",
                                     "fraudops_scorer_batch_seconds")  # fmt: skip
                stop.set()
                for thread in threads:
                    thread.join(10)
            if len(arrivals) < 20:
                for name in ("scorer.log", "console.log"):
                    print(f"{name}:", (tmp / name).read_text()[-3000:])
        finally:
            redis_server.stop()
            delete_topics(base, list(topics.values()))
    written = _written_at(url)
    shown = [(at, tx, _sent_at(tx)) for at, tx in arrivals]
    shown = [(at, tx, sent_at) for at, tx, sent_at in shown if sent_at >= measured_from]
    if len(shown) < 20:
        print(f"live: only {len(shown)} scores reached the stream")
        return
    hops: dict[str, list[float]] = {"produced -> scored (scorer)": [],
        "scored -> readable on Kafka": [], "readable -> on the stream (console)": [],
        "produced -> Postgres write began": []}  # fmt: skip
    for at, tx, sent_at in shown:
        if tx in tapped:
            read_at, scored_ms = tapped[tx]
            hops["produced -> scored (scorer)"].append(scored_ms - sent_at * 1000)
            hops["scored -> readable on Kafka"].append(read_at * 1000 - scored_ms)
            hops["readable -> on the stream (console)"].append((at - read_at) * 1000)
        if tx in written:
            hops["produced -> Postgres write began"].append((written[tx] - sent_at) * 1000)
    lags = [(at - sent_at) * 1000 for at, _, sent_at in shown]
    print(f"live at {rate} tx/s for {seconds:.0f} s ({sent} sent, {len(shown)} shown): "
          f"produce -> stream {_pcts(lags)}")  # fmt: skip
    for name, values in hops.items():
        if len(values) >= 20:
            print(f"  {name:38s} {_pcts(values)}  ({len(values)} of the shown)")
    on_screen = [(at / 1000 - _sent_at(tx)) * 1000 for at, tx in rows
                 if tx and tx.startswith("lv-") and _sent_at(tx) >= measured_from]  # fmt: skip
    if len(on_screen) >= 20:
        print(f"  produced -> in the browser's live table {_pcts(on_screen)}  "
              f"({len(on_screen)} rows, headless Chromium)")  # fmt: skip
    print(f"  scorer micro-batch (decode, score, produce, hand off): {batches}")
    print(f"  scorer writer (Postgres rows, Kafka acks): {durable}")


@contextlib.contextmanager
def bench_database(server_url: str, name: str | None) -> Iterator[str]:
    """The database to fill: `name`, created and migrated if missing and kept afterwards,
    or (no name) a fresh one dropped at the end."""
    if name is None:
        with fresh_database(server_url, "fraudops_bench_console") as url:
            yield url
        return
    url = db.create_database(server_url, name)
    db.migrate(url)
    yield url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rate", type=int, default=2000, help="live part: raw tx/s")
    parser.add_argument("--seconds", type=float, default=30, help="live part: measured span")
    parser.add_argument("--database", help="keep the filled database under this name")
    parser.add_argument("--fill-only", action="store_true", help="fill, then stop")
    parser.add_argument("--parts", default="pages,live", help="pages, live or both")
    parser.add_argument("--browser", action="store_true",
                        help="live part: also time a headless Chromium's live table")  # fmt: skip
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    if args.fill_only and not args.database:
        parser.error("--fill-only needs --database (a fresh database is dropped at the end)")
    if not parts <= {"pages", "live"}:
        parser.error(f"--parts: unknown {sorted(parts - {'pages', 'live'})}")
    base = with_local_kafka_login(load_settings().with_local_services())
    with bench_database(base.database_url, args.database) as url:
        started = time.perf_counter()
        bands = fill(url, args.rows)
        took = time.perf_counter() - started
        print(f"filled {args.rows:,} rows in {took:.0f} s: {bands}" if bands else
              f"{args.database} already holds {args.rows:,} rows")  # fmt: skip
        if args.fill_only:
            return 0
        if "pages" in parts:
            pages(base, url, args.rows, args.requests)
        if "live" in parts:
            live_latency(base, url, args.rate, args.seconds, args.browser)
    return 0


def pages(base: Settings, url: str, rows: int, requests: int) -> None:
    settings = replace(base, database_url=url, console_port=free_port(), log_level="WARNING")
    console, answers = console_process(settings, Path(tempfile.gettempdir()) / "console.log")
    with console:
        wait_until(answers, "the console", 60)
        with contextlib.closing(signed_in(settings)) as client:
            for name, paths in scenarios(client, requests, rows).items():
                p50, p95 = timed(client, paths)
                print(f"{name:42s} p50 {p50:6.1f} ms   p95 {p95:6.1f} ms")


if __name__ == "__main__":
    raise SystemExit(main())
