"""The demo's live loop on loopback for a trained project: the gRPC server and the stream
scorer serving the project's published model, with fresh topics, a fresh database and a
Redis of their own; the replay script sent through it; the drift watch over what it scored.

No pytest here: the replay test and a by-hand measurement share it."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fraudops.params import load_params
from fraudops.settings import Settings
from jobs.drift_watch import watch_window
from testkit.redis_server import RedisServer
from testkit.stack import (
    ROOT,
    channel_to,
    create_topics,
    delete_topics,
    fresh_database,
    issue_token,
    make_settings,
    process_env,
    query,
    service_process,
    wait_serving,
    wait_until,
)

REPLAY = ROOT / "scripts" / "replay.py"


@contextlib.contextmanager
def live_loop(
    serving_root: Path, work: Path, postgres_server_url: str, kafka: Settings
) -> Iterator[Settings]:
    """Server and scorer serving `serving_root`, ready, on `kafka`'s broker and login; the
    settings name the database and carry the token of a caller who may ingest."""
    topics = create_topics(kafka, "replay")
    redis = RedisServer(work / "redis").start()
    try:
        with fresh_database(postgres_server_url, "replay") as url:
            settings = make_settings(
                model_dir=serving_root, database_url=url, redis_url=redis.url,
                client_token=issue_token(url, "replay", scopes=("ingest",), sources=()),
                consumer_group=f"replay-{uuid.uuid4().hex[:8]}", **kafka.kafka_login(),
                **topics,
            )  # fmt: skip
            with (
                service_process("serving.server", settings, work / "server.log"),
                service_process("serving.scorer", settings, work / "scorer.log"),
                channel_to(settings.grpc_port, settings.client_token) as channel,
            ):
                wait_serving(channel)
                yield settings
    finally:
        redis.stop()
        delete_topics(kafka, list(topics.values()))


def replay(settings: Settings, *args: str, script: Path = REPLAY, timeout: float = 600) -> int:
    """Run the replay script against the loop; returns how many rows it sent, once every
    one of them is scored in the database."""
    done = subprocess.run(
        [sys.executable, str(script), *args], cwd=ROOT, env=process_env(settings),
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("replay: done,") and last.endswith(" 0 refused"), done.stdout
    sent = int(last.split()[2])

    count = "SELECT count(*) FROM scored_transactions"
    wait_until(lambda: query(settings.database_url, count)[0][0] >= sent,
               f"{sent} replayed rows scored", 180)  # fmt: skip
    return sent


def drift_report(settings: Settings, params_path: Path, out_dir: Path) -> dict[str, Any]:
    """The drift watch over the window ending now (the project's `monitoring` params):
    the full JSON report it wrote."""
    params = load_params(params_path, "monitoring")
    end = datetime.now(UTC) + timedelta(seconds=1)
    summary = watch_window(settings.database_url, settings.model_dir, end, params, out_dir)
    return json.loads(Path(summary["files"]["json"]).read_text())


def band_mix(settings: Settings) -> dict[str, float]:
    """Share of each band among the scored rows."""
    rows = query(settings.database_url, "SELECT band, count(*) FROM scored_transactions GROUP BY 1")
    total = sum(n for _, n in rows)
    return {band: n / total for band, n in rows}
