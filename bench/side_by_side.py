"""Inline capacity of two code trees side by side: each tree's server (Redis state, Postgres
writes, the caller gate, one process) runs in turn, alternated round by round, under the Go
load generator (`make bench-tools`) at several numbers of concurrent callers, so that a shared,
noisy machine loads both alike. Per run: Score/s, the server's CPU per call (all its threads),
the callers' p50/p99, errors by code, the load average and, where the server reports it
(fraudops_inline_batch_size), the mean number of calls scored together. `--profile` records
the server of each tree with py-spy at the last number of callers instead.

    python -m bench.side_by_side --trees /tmp/base,. --rounds 3 --seconds 5 --clients 1,8,16
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import replace
from pathlib import Path

import redis

from bench import capacity
from bench.common import LOG_LEVEL, STOP_S, median, workspace
from devstack import with_local_kafka_login
from fraudops.settings import Settings, load_settings
from testkit.redis_server import RedisServer
from testkit.stack import (
    channel_to,
    free_port,
    issue_token,
    loopback_settings,
    process_env,
    stop_process,
    wait_serving,
)

# FRAUDOPS_PROFILE_NATIVE=1: py-spy also samples C and Cython frames (gRPC's own).
NATIVE = ["--native"] if os.environ.get("FRAUDOPS_PROFILE_NATIVE") else []


@contextlib.contextmanager
def server_from(tree: Path, settings: Settings, log: Path):
    """A one-process server running `tree`'s code."""
    env = {**process_env(settings), "PYTHONPATH": str(tree)}
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "serving.server"], cwd=tree, env=env,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        yield proc
    finally:
        stop_process(proc, timeout=STOP_S)


def one_run(binary: Path, s: Settings, pid: int, clients: int, seconds: float, work: Path,
            tag: str) -> dict:  # fmt: skip
    """One measured load-generator run of fresh transactions against a running server."""
    needed = int(seconds * 8_000) + 2_000
    requests = capacity.loadgen_requests(work / f"{tag}.bin", needed, tag)
    before = _batch_totals(s.metrics_port)
    load, cpu = os.getloadavg()[0], capacity.cpu_seconds(pid)
    report = capacity.run_loadgen(binary, s.grpc_port, clients, seconds, requests, s.client_token)
    cpu = capacity.cpu_seconds(pid) - cpu
    after = _batch_totals(s.metrics_port)
    batch = None
    if before and after and after[1] > before[1]:
        batch = (after[0] - before[0]) / (after[1] - before[1])
    requests.unlink()
    calls = report["calls"]
    return {"rate": calls / report["seconds"], "cpu_us": cpu / max(calls, 1) * 1e6,
            "p50": report["p50_ms"], "p99": report["p99_ms"], "errors": report["codes"],
            "load": load, "batch": batch}  # fmt: skip


def _batch_totals(metrics_port: int) -> tuple[float, float] | None:
    """(calls, batches) scored inline so far, from the server's metrics (None: none)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        for name in ("sum", "count"):
            if line.startswith(f"fraudops_inline_batch_size_{name} "):
                values[name] = float(line.split()[1])
    return (values["sum"], values["count"]) if "count" in values else None


def profile(s: Settings, pid: int, binary: Path, clients: int, seconds: float, work: Path,
            tag: str) -> str:  # fmt: skip
    """py-spy samples of the server under load: the thread holding the GIL, so where the
    Python time goes (gRPC core and Redis time, outside the GIL, are not in it)."""
    spy = shutil.which("py-spy") or "/tmp/pyspy/bin/py-spy"
    out = work / f"{tag}.txt"
    requests = capacity.loadgen_requests(work / f"{tag}.bin", int(seconds * 8_000) + 2_000, tag)
    spy_proc = subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--format",
            "raw",
            "--nonblocking",
            "--threads",
            "--rate",
            "200",
            "--output",
            str(out),
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    capacity.run_loadgen(binary, s.grpc_port, clients, seconds, requests, s.client_token)
    spy_proc.wait(timeout=60)
    return str(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", required=True, help="comma-separated code trees")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", default="1,8,16")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    trees = [Path(t).resolve() for t in args.trees.split(",")]
    clients = [int(c) for c in args.clients.split(",")]
    binary = capacity.find_loadgen()
    if binary is None:
        parser.error("the Go load generator is not built: make bench-tools")
    base = with_local_kafka_login(load_settings().with_local_services())
    rows = []
    with workspace(base.database_url, "fraudops-sbs") as (work, _built, url):
        settings = loopback_settings(base, database_url=url, model_dir=work / "serving",
                                     log_level=LOG_LEVEL,
                                     client_token=issue_token(url, "bench"))  # fmt: skip
        redis_server = RedisServer(work / "redis").start()
        try:
            for r in range(args.rounds):
                for t, tree in enumerate(trees):
                    redis.Redis.from_url(redis_server.url).flushall()
                    s = replace(settings, redis_url=redis_server.url, grpc_port=free_port(),
                                metrics_port=free_port())  # fmt: skip
                    with server_from(tree, s, work / f"server-{t}.log") as proc, \
                            channel_to(s.grpc_port) as channel:  # fmt: skip
                        wait_serving(channel, timeout=120)
                        warm = capacity.loadgen_requests(work / "warm.bin", 4000, f"w{r}{t}")
                        capacity.run_loadgen(binary, s.grpc_port, 8, 2.0, warm, s.client_token)
                        if args.profile:
                            out = profile(s, proc.pid, binary, clients[-1], args.seconds,
                                          work.parent, f"prof-{t}-{r}")  # fmt: skip
                            print(tree, out, flush=True)
                            continue
                        for c in clients:
                            row = one_run(binary, s, proc.pid, c, args.seconds, work,
                                          f"r{r}t{t}c{c}")  # fmt: skip
                            rows.append((tree, c, row))
                            print(tree.name or tree, c, row, flush=True)
        finally:
            redis_server.stop()
    for c in clients:
        for tree in trees:
            mine = [row for t, k, row in rows if t == tree and k == c]
            if mine:
                print(f"{c:>3} callers {tree}: " + ", ".join(
                    f"{key} {median([m[key] for m in mine]):.2f}" for key in
                    ("rate", "cpu_us", "p50", "p99", "load")))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
