"""The console as it runs: `fraudops-console` under uvicorn on loopback, accounts made by
its CLI, the live stream fed from a real Kafka topic (a burst counted whole, its flagged
scores all shown, the rest within the stream's budget), the models screen over published
models, and an admin's rollback through serving/rollback.py."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from dataclasses import replace

import httpx
import pytest
from confluent_kafka import Producer

from console import auth, live
from fraudops.proto_gen.fraud.v1 import fraud_pb2
from tests.helpers.console_env import PASSWORD, add_account, console_settings
from tests.helpers.serving_env import (
    ROOT,
    free_port,
    process_env,
    publish_model,
    query,
    service_process,
    wait_until,
)


@pytest.fixture
def settings(database_url, kafka_settings, kafka_topics, serving_root):
    return replace(
        console_settings(database_url), **kafka_settings.kafka_login(),
        console_port=free_port(), model_dir=serving_root, **kafka_topics(),
    )  # fmt: skip


@pytest.fixture
def console(settings, tmp_path):
    """The console process; yields its base URL once it answers."""
    with service_process("console", settings, tmp_path / "console.log", "serve") as proc:
        url = settings.console_url()

        def answers() -> bool:
            assert proc.poll() is None, (tmp_path / "console.log").read_text()
            try:
                return httpx.get(f"{url}/api/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(answers, "the console to answer", 60)
        yield url


def session(url: str, name: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=30)
    response = client.post("/api/auth/login", json={"name": name, "password": PASSWORD})
    assert response.status_code == 200, response.text
    client.headers[auth.CSRF_HEADER] = client.cookies[auth.CSRF_COOKIE]
    return client


def test_users_add_takes_the_password_from_stdin(settings, database_url):
    command = [sys.executable, "-m", "console", "users", "add", "cli-analyst", "--role", "analyst"]
    env = process_env(settings)
    done = subprocess.run(command, input=PASSWORD + "\n", env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    stored = query(database_url, "SELECT role, password_hash FROM console_users"
                   " WHERE name = 'cli-analyst'")  # fmt: skip
    assert stored[0][0] == "analyst" and stored[0][1].startswith("$argon2id$")
    assert PASSWORD not in stored[0][1]
    viewer = [*command[:-3], "cli-short", "--role", "viewer"]
    short = subprocess.run(viewer, input="short\n", env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert short.returncode == 2 and "password" in short.stderr


def test_live_stream_carries_scores_from_kafka(console, settings, database_url):
    client = session(console, add_account(database_url, "viewer"))
    producer = Producer(settings.kafka_config())
    sent = fraud_pb2.ScoreResponse(transaction_id="live-1", score=0.97, band=fraud_pb2.BLOCK,
                                   model_version="v9", reasons=["big"], latency_us=300)  # fmt: skip
    seen: list[dict] = []
    with client.stream("GET", "/api/live/stream") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "ready":
                producer.produce(settings.topic_scores, sent.SerializeToString(), key=b"1")
                producer.produce(settings.topic_scores, b"\xff not a score", key=b"1")
                producer.flush(30)
            elif line.startswith("data: ") and event == "tick":
                tick = json.loads(line.removeprefix("data: "))
                seen += tick["items"]
                if seen:
                    assert tick["counts"] == {"BLOCK": 1}
                    break
    assert seen[0]["transaction_id"] == "live-1" and seen[0]["band"] == "BLOCK"
    status = client.get("/api/live/status").json()
    assert status["consumer_group"] == settings.consumer_group
    assert status["consumer_lag"] in (0, None)  # nothing was sent to this raw topic


def ticks_after_producing(client, settings, scores: list) -> list[dict]:
    """The stream's ticks from the one after `scores` were produced (once it is ready)
    until their counts add up to all of them and a tick comes with nothing left to show."""
    producer = Producer(settings.kafka_config())
    ticks: list[dict] = []
    with client.stream("GET", "/api/live/stream") as stream:
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "ready":
                for score in scores:
                    producer.produce(settings.topic_scores, score.SerializeToString(), key=b"1")
                producer.flush(30)
            elif line.startswith("data: ") and event == "tick":
                ticks.append(json.loads(line.removeprefix("data: ")))
                counted = sum(n for t in ticks for n in t["counts"].values())
                if counted >= len(scores) and not ticks[-1]["items"]:
                    break
    return ticks


def test_a_burst_is_counted_whole_and_shows_every_flagged_score(console, settings, database_url):
    client = session(console, add_account(database_url, "viewer"))
    allow = [fraud_pb2.ScoreResponse(transaction_id=f"allow-{n}", score=0.01,
                                     band=fraud_pb2.ALLOW) for n in range(400)]  # fmt: skip
    block = [fraud_pb2.ScoreResponse(transaction_id=f"block-{n}", score=0.99,
                                     band=fraud_pb2.BLOCK) for n in range(40)]  # fmt: skip
    ticks = ticks_after_producing(client, settings, allow[:200] + block + allow[200:])
    totals = sum((Counter(t["counts"]) for t in ticks), Counter())
    assert totals == {"ALLOW": 400, "BLOCK": 40}
    assert all(len(t["items"]) <= live.MAX_ITEMS_PER_TICK for t in ticks)
    shown = [item["transaction_id"] for t in ticks for item in t["items"]]
    assert len(shown) == len(set(shown))
    # more flagged scores than one tick holds (but fewer than a second's budget): the rest
    # come in the next ones, none dropped, however the reads split the burst
    assert {s.transaction_id for s in block} <= set(shown)
    assert sum(i.startswith("allow-") for i in shown) < len(allow)  # counted, not all sent


def test_models_screen_and_admin_rollback(console, settings, database_url, built_models):
    publish_model(built_models, settings.model_dir, "v1")
    publish_model(built_models, settings.model_dir, "v2")
    admin = add_account(database_url, "admin")
    client = session(console, admin)
    models = client.get("/api/models").json()
    assert [v["version"] for v in models["versions"]] == ["v2", "v1"]
    assert {"challenge", "block"} <= set(models["versions"][0]["thresholds"])
    live = client.get("/api/live/status").json()
    assert live["model_version"] == "v2" and live["thresholds"]

    response = client.post("/api/models/rollback", json={})
    assert response.status_code == 200, response.text
    assert response.json() == {"published": "v1"}
    audit = query(database_url, "SELECT detail FROM audit_log WHERE kind = 'rollback'"
                  " AND detail->>'user' = %s", (admin,))  # fmt: skip
    assert [(a[0]["from"], a[0]["to"]) for a in audit] == [("v2", "v1")]
    unknown = client.post("/api/models/rollback", json={"to": "v404"})
    assert unknown.status_code == 409
