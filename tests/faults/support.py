"""What the fault cases share: services of a test's own on free ports (`PrivateStack`), a
stream of transactions sent while the fault happens (`Stream`, `stream_through_fault`),
settings pointed at the private services (`with_stack`), what is counted (`stored_count`,
`histories`) and a case's row of the table with the checks every case makes (`report_stream`)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from devstack import with_local_kafka_login
from fraudops.settings import Settings
from serving.feature_state import RedisFeatures
from serving.kafka_io import make_producer
from tests.helpers.serving_env import (
    ROOT,
    free_port,
    process_env,
    scored_ids,
    transaction,
    wait_until,
)


class PrivateStack:
    """Kafka, Postgres, Redis and MLflow of one test: free ports, a run directory of its
    own, run by the dev stack's command line (a service it starts outlives the command, as
    in use). MLflow keeps its artifacts where the dev stack does (mlruns/)."""

    def __init__(self, run_dir: Path):
        settings = Settings(
            kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
            kafka_controller_port=free_port(),
            postgres_port=free_port(),
            redis_port=free_port(),
            mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}",
        )
        self.settings = settings.with_local_services()
        self.run_dir = run_dir
        self._started: list[str] = []

    def _devstack(self, command: str, *names: str) -> None:
        args = [sys.executable, "-m", "devstack", command, *names,
                "--run-dir", str(self.run_dir)]  # fmt: skip
        done = subprocess.run(
            args, cwd=ROOT, env=process_env(self.settings), capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, f"devstack {command} {names} failed:\n{done.stderr}"

    def up(self, *names: str) -> None:
        self._devstack("up", *names)
        self._started += [n for n in names if n not in self._started]

    def down(self, *names: str) -> None:
        self._devstack("down", *names)

    def restart(self, name: str, while_down: Callable[[], object] = lambda: None) -> float:
        """Stop the service, run `while_down`, start it again on the same port and data;
        the seconds it was away (from the stop signal until it answers again)."""
        started = time.monotonic()
        self.down(name)
        while_down()
        self.up(name)
        return time.monotonic() - started

    def close(self) -> None:
        if self._started:
            self.down(*self._started)


USERS = 11  # a stream's transactions belong to users 1..USERS


class Stream:
    """Produce transactions to a topic at a steady pace on a thread of its own, so the
    fault happens while they flow; `join` returns once every one is acknowledged. With
    `invalid_every`, every such transaction has a negative amount (`invalid` names them)."""

    def __init__(
        self, kafka: Settings, topic: str, ids: list[str], per_second: float = 400,
        invalid_every: int = 0,
    ):  # fmt: skip
        self.ids = ids
        self.invalid = set(ids[::invalid_every]) if invalid_every else set()
        self.sent = 0
        # The project's producer settings: users placed by Kafka's default partitioner.
        self._producer = make_producer(kafka, **{"linger.ms": 5})
        self._topic = topic
        self._pause = 1.0 / per_second
        self._thread = threading.Thread(target=self._run, name="stream", daemon=True)

    def start(self) -> Stream:
        self._thread.start()
        return self

    def _run(self) -> None:
        for n, tx_id in enumerate(self.ids):
            amount = -1.0 if tx_id in self.invalid else 10.0 + n % 50
            tx = transaction(n, user_id=1 + n % USERS, transaction_id=tx_id,
                             timestamp=1_700_000_000 + n, amount=amount)  # fmt: skip
            self._producer.produce(self._topic, key=str(tx.user_id), value=tx.SerializeToString())
            self._producer.poll(0)
            self.sent += 1
            time.sleep(self._pause)

    def join(self, timeout: float = 120) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the stream did not finish"
        assert self._producer.flush(timeout) == 0, "the stream's messages were not delivered"


def with_stack(base: Settings, stack: PrivateStack, *names: str) -> Settings:
    """`base` pointed at the private stack's services named (kafka, postgres, redis)."""
    s = stack.settings
    fields = {
        "kafka": with_local_kafka_login(s, stack.run_dir).kafka_login(),  # its broker's admin
        "postgres": {"database_url": s.database_url},
        "redis": {"redis_url": s.redis_url},
    }
    return replace(base, **{k: v for n in names for k, v in fields[n].items()})


def resumed(count: Callable[[], int], what: str, timeout: float = 120) -> int:
    """Wait until `count()` grows past its value now (the stream moves again); the count."""
    before = count()
    return wait_until(lambda: (n := count()) > before and n, what, timeout, every=0.05)


def log_says(path: Path, text: str, timeout: float = 120) -> None:
    """Wait until a process's log holds `text` (the process noticed the fault)."""
    wait_until(lambda: text in path.read_text(errors="replace"), f"{text!r} in {path}", timeout)


@dataclass
class FaultRun:
    """Around a fault: seconds from it until transactions were stored again, how many were
    stored by then, and what the fault returned."""

    recovery_s: float
    stored_at_resume: int
    fault: Any


def stream_through_fault(
    settings: Settings, ids: list[str], stored: Callable[[], int], fault: Callable[[], Any],
    repair: Callable[[], object] = lambda: None, survivors: Sequence[subprocess.Popen] = (),
) -> FaultRun:  # fmt: skip
    """The fault cases' stream: a quarter of `ids` sent and stored first, then the rest sent
    while `fault()` happens, so the fault always meets transactions still to come however
    slow the machine (a scorer that had already stored everything could never show that it
    scores again); then scoring resumes, `repair()`, and every transaction is stored, with
    the `survivors` (scorer processes) still running."""
    quarter = len(ids) // 4
    Stream(settings, settings.topic_raw, ids[:quarter]).start().join()
    wait_until(lambda: stored() >= quarter, "a quarter of the stream stored", 120)
    rest = Stream(settings, settings.topic_raw, ids[quarter:]).start()
    wait_until(lambda: rest.sent >= len(ids) // 20, "the rest of the stream under way", 60)
    started = time.monotonic()
    outcome = fault()
    at_resume = resumed(stored, "scoring to go on after the fault")
    recovery = time.monotonic() - started
    repair()
    rest.join()
    wait_until(lambda: stored() >= len(ids), "every transaction stored", 180)
    for process in survivors:
        assert process.poll() is None, "a scorer must ride out the fault, not exit"
    return FaultRun(recovery, at_resume, outcome)


def stored_count(url: str, ids: list[str]) -> Callable[[], int]:
    """How many of `ids` the database holds so far: what `stream_through_fault` waits on."""
    return lambda: len(scored_ids(url, ids))


def histories(url: str, partitions: int = 3) -> list[str]:
    """Every transaction id recorded in the stream's users' histories (repeats included)."""
    state = RedisFeatures.from_url(url, timeout=10, partitions=partitions)
    return [event[0] for user in range(1, USERS + 1) for event in state.history(user)]


def held(counted: list[str]) -> str:
    """A note's words on the histories: how many events they hold, how many twice."""
    return f"{len(counted)} events, {len(counted) - len(set(counted))} twice"


def report_stream(
    fault_report: Callable[..., None], fault: str, settings: Settings, ids: list[str],
    run: FaultRun, note: str, counted: list[str] | None = None,
) -> None:  # fmt: skip
    """Record a stream case's row of the table, then check what every case promises: each of
    `ids` stored once and, given `counted` (the users' histories), counted once."""
    rows = scored_ids(settings.database_url, ids)
    fault_report(fault, **tally(ids, rows, counted), recovery_s=run.recovery_s, note=note)
    assert sorted(rows) == sorted(ids), "every transaction stored once"
    if counted is not None:
        assert sorted(counted) == sorted(ids), "every transaction counted once in its history"


def tally(ids: list[str], rows: list[str], counted: list[str] | None = None) -> dict[str, int]:
    """A row's figures: sent, scored (distinct stored rows), and lost and twice among the
    stored rows, or among `counted` (the users' histories) when given."""
    seen = rows if counted is None else counted
    return {"sent": len(ids), "scored": len(set(rows)), "lost": len(set(ids) - set(seen)),
            "twice": len(seen) - len(set(seen))}  # fmt: skip
