"""The cost of the shared per-user feature state: `transform_many` on 2,000-row
micro-batches over 5,000 users, Redis (`RedisFeatures`) beside in-memory (`MemoryFeatures`)
in one run, median of 5 runs; Redis round trips and bytes on the wire per transaction;
and single-transaction `transform` latency (what the inline path adds per call).

`python -m bench.features` starts its own redis-server (append-only file, as served) on
a free loopback port and needs nothing else."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from serving.feature_state import MemoryFeatures, RedisFeatures
from testkit.redis_server import RedisServer
from testkit.transactions import make_transactions


def stream(n_rows: int, n_users: int, seed: int = 0) -> list[dict]:
    """A time-ordered stream of `n_rows` over three days, spread over `n_users` users."""
    frame = make_transactions(n_rows, seed=seed, days=3)
    frame["user_id"] = np.random.default_rng(seed).integers(1, n_users + 1, n_rows)
    frame["transaction_id"] = [f"b{seed}-{i}" for i in range(n_rows)]
    return frame.to_dict("records")


def per_tx_us(state, rows: list[dict], batch: int) -> float:
    """Microseconds per transaction of transform_many over `rows` in `batch`-row batches."""
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        state.transform_many(rows[i : i + batch])
    return (time.perf_counter() - started) * 1e6 / len(rows)


def wire_stats(client) -> tuple[int, int, int, int]:
    """Redis's own counters: bytes in, bytes out, script calls, microseconds in scripts."""
    stats = client.info("stats")
    script = client.info("commandstats").get("cmdstat_evalsha", {})
    return (stats["total_net_input_bytes"], stats["total_net_output_bytes"],
            script.get("calls", 0), script.get("usec", 0))  # fmt: skip


def single_latency_us(make_state, rows: list[dict]) -> float:
    """p50 of one transform call (one transaction, one round trip for Redis)."""
    state, samples = make_state(), []
    for tx in rows:
        started = time.perf_counter_ns()
        state.transform(tx)
        samples.append((time.perf_counter_ns() - started) / 1000)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    rows = stream(args.rows, args.users)
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            report(server, rows, args)
        finally:
            server.stop()


def report(server: RedisServer, rows: list[dict], args) -> None:
    redis_state = RedisFeatures.from_url(server.url, timeout=30)
    client = redis_state.client
    memory_us, redis_us = [], []
    for _ in range(args.runs):
        memory_us.append(per_tx_us(MemoryFeatures(), rows, args.batch))
        client.flushall()
        before = wire_stats(client)
        redis_us.append(per_tx_us(redis_state, rows, args.batch))
        after = wire_stats(client)
    sent, received, calls, inside_us = (b - a for a, b in zip(before, after, strict=True))
    used = client.info("memory")["used_memory"]
    keys = client.scan_iter(match=f"{redis_state.prefix}:h:*", count=1000)
    users = sum(1 for key in keys if not key.endswith(b":ids"))
    n, batches = len(rows), -(-len(rows) // args.batch)
    print(f"transform_many, {n} rows in {args.batch}-row batches over {args.users} users, "
          f"median of {args.runs} runs:")  # fmt: skip
    print(f"  in-memory  {statistics.median(memory_us):8.2f} us/tx   runs {_fmt(memory_us)}")
    print(f"  Redis      {statistics.median(redis_us):8.2f} us/tx   runs {_fmt(redis_us)}")
    print(f"  of which inside Redis (last run): {inside_us / n:.2f} us/tx")
    print(f"  Redis round trips: {calls} script calls for {batches} batches "
          f"({calls / n:.5f} per tx)")  # fmt: skip
    print(f"  Redis bytes per tx: {sent / n:.0f} sent, {received / n:.0f} received")
    print(f"  Redis memory: {used / 2**20:.1f} MiB for {users} users "
          f"({used / max(users, 1):.0f} B per user)")  # fmt: skip
    single = rows[: min(len(rows), 5000)]
    client.flushall()
    mem_p50 = single_latency_us(MemoryFeatures, single)
    redis_p50 = single_latency_us(lambda: redis_state, single)
    print(f"transform of one transaction, p50 over {len(single)} calls: in-memory "
          f"{mem_p50:.1f} us, Redis {redis_p50:.1f} us (+{redis_p50 - mem_p50:.1f})")  # fmt: skip


def _fmt(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
