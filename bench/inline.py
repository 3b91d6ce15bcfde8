"""Inline scoring over gRPC on loopback: per-call latency of Score, per-transaction cost
of ScoreBatch, and what a client sees while a new model is hot-reloaded."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from bench.common import Stats, median, transactions
from fraudops.grpc_client import bearer_metadata
from fraudops.modelspec import publish
from fraudops.proto_gen.fraud.v1 import fraud_pb2, fraud_pb2_grpc


@dataclass
class InlineResult:
    score_rounds: list[Stats]
    server_us: list[float]
    batch_size: int
    batch_per_tx_us: list[float]
    noop_rounds: list[Stats] = field(default_factory=list)


def call_latency(
    port: int, txs: list, warmup: int, rounds: int, token: str | None = None
) -> list[Stats]:
    """Sequential Score calls: `rounds` passes over txs[warmup:] after a warm-up."""
    metadata = bearer_metadata(token)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = fraud_pb2_grpc.FraudScoringStub(channel)
        for tx in txs[:warmup]:
            stub.Score(tx, metadata=metadata)
        out = []
        for _ in range(rounds):
            samples = []
            for tx in txs[warmup:]:
                started = time.perf_counter()
                stub.Score(tx, metadata=metadata)
                samples.append(time.perf_counter() - started)
            out.append(Stats(samples))
    return out


def score_latency(
    port: int, calls: int, rounds: int, warmup: int = 500, token: str | None = None
) -> InlineResult:
    """`rounds` rounds of `calls` sequential Score calls after a warm-up, and ScoreBatch."""
    return interleaved_latency([port], calls, rounds, warmup, [token])[0]


def interleaved_latency(
    ports: list[int], calls: int, rounds: int, warmup: int = 500,
    tokens: list[str | None] | None = None, located: str = "",
) -> list[InlineResult]:  # fmt: skip
    """The same Score calls to each server (with the token of the same rank), one round
    each in turn (server 1, 2, 1, 2, ...), so that a change in the machine's load falls on
    all of them alike; then ScoreBatch on each. One result per port."""
    txs = transactions(calls + warmup, users=5000, seed=1, prefix="inline", located=located)
    batch_size, batch_calls = 100, max(20, calls // 100)
    results = [InlineResult([], [], batch_size, []) for _ in ports]
    metadata = [bearer_metadata(t) for t in (tokens or [None] * len(ports))]
    with contextlib.ExitStack() as stack:
        stubs = []
        for port in ports:
            channel = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{port}"))
            stubs.append(fraud_pb2_grpc.FraudScoringStub(channel))
        for stub, md in zip(stubs, metadata, strict=True):
            for tx in txs[:warmup]:
                stub.Score(tx, metadata=md)
        for _ in range(rounds):
            for stub, md, result in zip(stubs, metadata, results, strict=True):
                samples = []
                for tx in txs[warmup:]:
                    started = time.perf_counter()
                    reply = stub.Score(tx, metadata=md)
                    samples.append(time.perf_counter() - started)
                    result.server_us.append(reply.latency_us)
                result.score_rounds.append(Stats(samples))
        request = fraud_pb2.ScoreBatchRequest(transactions=txs[:batch_size])
        for stub, md, result in zip(stubs, metadata, results, strict=True):
            for _ in range(batch_calls):
                started = time.perf_counter()
                stub.ScoreBatch(request, metadata=md)
                result.batch_per_tx_us.append((time.perf_counter() - started) / batch_size * 1e6)
    return results


@dataclass(eq=False)
class SteadyClient(threading.Thread):
    """Back-to-back Score calls recording (start time, latency, version or error)."""

    port: int
    token: str | None = None
    max_seconds: float = 120.0
    calls: list[tuple[float, float, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        super().__init__(daemon=True)

    def run(self) -> None:
        txs = transactions(2000, users=500, seed=2, prefix="reload")
        deadline = time.monotonic() + self.max_seconds
        metadata = bearer_metadata(self.token)
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            stub = fraud_pb2_grpc.FraudScoringStub(channel)
            i = 0
            while not self.stop.is_set() and time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    tx = txs[i % len(txs)]
                    outcome = stub.Score(tx, timeout=5, metadata=metadata).model_version
                except grpc.RpcError as err:
                    outcome = f"ERROR {err.code().name}"
                self.calls.append((started, time.perf_counter() - started, outcome))
                i += 1


@dataclass
class ReloadResult:
    steady: Stats
    during: Stats
    failures: int
    calls: int
    seconds_to_new_version: float


def hot_reload(
    port: int, built: Path, serving_root: Path, version: str, token: str | None = None
) -> ReloadResult:
    """Steady state for 3 s, publish `version`, then keep going 3 s past its first answer."""
    client = SteadyClient(port, token)
    client.start()
    time.sleep(3.0)
    published = time.perf_counter()
    publish(built / "v2", serving_root, version)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(c[2] == version for c in client.calls[-50:]):
        time.sleep(0.01)
    time.sleep(3.0)
    client.stop.set()
    client.join(timeout=30)
    first_new = min((c[0] for c in client.calls if c[2] == version), default=float("nan"))
    steady = [c[1] for c in client.calls if c[0] < published]
    window_end = first_new + 1.0
    during = [c[1] for c in client.calls if published <= c[0] <= window_end]
    failures = sum(1 for c in client.calls if c[2].startswith("ERROR"))
    return ReloadResult(
        Stats(steady), Stats(during), failures, len(client.calls), first_new - published
    )


def report(inline: InlineResult, reload: ReloadResult) -> list[str]:
    p50s = [s.pct(50) for s in inline.score_rounds]
    p99s = [s.pct(99) for s in inline.score_rounds]
    noop50 = median([s.pct(50) for s in inline.noop_rounds])
    noop99 = median([s.pct(99) for s in inline.noop_rounds])
    n = len(inline.score_rounds[0].samples)
    return [
        f"inline Score, {len(p50s)} rounds x {n} sequential calls (client-observed):",
        f"  p50 median {median(p50s):6.0f} µs  (rounds: {', '.join(f'{v:.0f}' for v in p50s)})",
        f"  p99 median {median(p99s):6.0f} µs  (rounds: {', '.join(f'{v:.0f}' for v in p99s)})",
        f"  server-side scoring (latency_us) median {median(inline.server_us):.0f} µs: "
        f"the rest is gRPC + loopback",
        f"  a no-op gRPC Score on this machine now: p50 {noop50:.0f} µs, p99 {noop99:.0f} µs "
        f"(real/no-op p50 {median(p50s) / noop50:.2f}x, p99 {median(p99s) / noop99:.2f}x)",
        f"  ScoreBatch of {inline.batch_size}: median {median(inline.batch_per_tx_us):.1f} µs "
        f"per transaction ({median(p50s) / median(inline.batch_per_tx_us):.0f}x cheaper "
        "than one Score call)",
        f"hot reload ({reload.calls} calls, {reload.failures} failed; new version answering "
        f"{reload.seconds_to_new_version * 1000:.0f} ms after the publish):",
        f"  steady        {reload.steady.summary()}",
        f"  reload window {reload.during.summary()}  (publish .. first new answer + 1 s)",
        f"  p99 ratio reload/steady {reload.during.pct(99) / reload.steady.pct(99):.2f}",
    ]


def redis_ping_us(url: str, n: int = 2000) -> float:
    """p50 of a Redis PING from this process: the floor under any Redis round trip now."""
    import redis

    client, samples = redis.Redis.from_url(url), []
    try:
        for _ in range(n):
            started = time.perf_counter()
            client.ping()
            samples.append(time.perf_counter() - started)
    finally:
        client.close()
    return Stats(samples).pct(50)


def pinned_ping_us(url: str, redis_pid: int) -> dict[str, float]:
    """PING p50 with this process and redis-server pinned to one core, then to two: what
    waking a process on another, idle core adds to a round trip on this machine."""
    if len(os.sched_getaffinity(0)) < 2:
        return {}
    mine, theirs = os.sched_getaffinity(0), os.sched_getaffinity(redis_pid)
    a, b = sorted(mine)[:2]
    out = {}
    try:
        for label, cores in (("same core", (a, a)), ("two cores", (a, b))):
            os.sched_setaffinity(0, {cores[0]})
            os.sched_setaffinity(redis_pid, {cores[1]})
            out[label] = redis_ping_us(url)
    finally:
        os.sched_setaffinity(0, mine)
        os.sched_setaffinity(redis_pid, theirs)
    return out


def round_medians(results: dict[str, InlineResult]) -> list[str]:
    """A line a result: the medians over its rounds of the client's p50 and p99, and of the
    server-side time."""
    lines = []
    for label, result in results.items():
        p50 = median([s.pct(50) for s in result.score_rounds])
        p99 = median([s.pct(99) for s in result.score_rounds])
        lines.append(f"  {label:<10} p50 {p50:6.0f} µs  p99 {p99:6.0f} µs  "
                     f"(server-side {median(result.server_us):.0f} µs)")  # fmt: skip
    return lines


def auth_report(anonymous: InlineResult, with_token: InlineResult) -> list[str]:
    """The same sequential Score calls to one server, without credentials (Score open to
    anonymous callers) and with a bearer token, their rounds in turn."""
    lines = ["inline Score without and with a caller's token (one server, same calls, rounds "
             "in turn, medians):"]  # fmt: skip
    lines += round_medians({"anonymous": anonymous, "token": with_token})
    grown, rounds, _ = p50_gap(anonymous, with_token)
    lines.append(f"  the token adds {grown:+.0f} µs to p50 (target: at "
                 f"most +20 µs; per round {', '.join(f'{v:+.0f}' for v in rounds)})")  # fmt: skip
    return lines


def state_report(
    memory: InlineResult, in_redis: InlineResult, ping_us: float, pinned: dict[str, float]
) -> list[str]:
    """The same sequential Score calls with per-user state in memory and in Redis, their
    rounds in turn."""
    lines = ["inline Score, per-user state in memory beside in Redis (same calls, rounds in "
             "turn, medians):"]  # fmt: skip
    lines += round_medians({"in memory": memory, "Redis": in_redis})
    grown, rounds, server_grown = p50_gap(memory, in_redis)
    lines.append(
        f"  Redis adds {grown:+.0f} µs to p50 (target: at most +150 µs; per round "
        f"{', '.join(f'{v:+.0f}' for v in rounds)}; server-side {server_grown:+.0f} µs)"
    )
    where = "".join(f", {k} {v:.0f} µs" for k, v in pinned.items())
    lines.append(f"  a Redis PING round trip on this machine now: p50 {ping_us:.0f} µs{where}")
    return lines


def geoip_report(off: InlineResult, on: InlineResult) -> list[str]:
    """Score latency with IP enrichment off beside on: the client's p50 per round, paired."""
    lines = [f"inline Score with located transactions, {len(off.score_rounds)} rounds in turn:"]
    for label, result in (("enrichment off", off), ("enrichment on", on)):
        p50 = median([r.pct(50) for r in result.score_rounds])
        lines.append(f"  {label:<16} client p50 {p50:6.0f} µs, server median "
                     f"{median(result.server_us):5.0f} µs")  # fmt: skip
    added = [b.pct(50) - a.pct(50) for a, b in zip(off.score_rounds, on.score_rounds, strict=True)]
    server = median(on.server_us) - median(off.server_us)
    lines.append(f"  enrichment adds {median(added):+.0f} µs client p50 (rounds: "
                 f"{', '.join(f'{d:+.0f}' for d in added)}), {server:+.0f} µs server median; "
                 "target at most +20 µs")  # fmt: skip
    return lines


def p50_gap(base: InlineResult, other: InlineResult) -> tuple[float, list[float], float]:
    """What `other` adds to `base`'s p50: the medians' gap, each round's, and server-side."""
    gap = median([s.pct(50) for s in other.score_rounds]) - median(
        [s.pct(50) for s in base.score_rounds]
    )
    rounds = [o.pct(50) - b.pct(50)
              for b, o in zip(base.score_rounds, other.score_rounds, strict=True)]  # fmt: skip
    return gap, rounds, median(other.server_us) - median(base.server_us)


def rules_report(results: dict[int, InlineResult]) -> list[str]:
    """The same sequential Score calls to servers serving 0, 10, 100 ... rules, their rounds
    in turn; what each rule count adds to p50 over the first (per round, then the median)."""
    lines = ["inline Score by served rules (same calls, rounds in turn, medians; load average "
             f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}):"]  # fmt: skip
    base_count, base = next(iter(results.items()))
    base_p50 = median([s.pct(50) for s in base.score_rounds])
    for count, result in results.items():
        p50 = median([s.pct(50) for s in result.score_rounds])
        p99 = median([s.pct(99) for s in result.score_rounds])
        gap, rounds, server = p50_gap(base, result)
        lines.append(
            f"  {count:>4} rules  p50 {p50:6.0f} µs  p99 {p99:6.0f} µs  ({p50 / base_p50:.2f}x; "
            f"p50 {gap:+.0f} µs over {base_count} rules, per round "
            f"{', '.join(f'{v:+.0f}' for v in rounds)}; server-side {server:+.0f} µs)"
        )
    return lines


def lookup_report(path: Path, n: int = 50_000) -> list[str]:
    """The scorer's enrichment of one address in this process (CPU time, so a busy machine
    moves it less): n random public addresses never seen (`GeoIpStore.located`: the lookup
    and the keyed hash, cached together), then the same again (cached); beside them the
    lookup and the hash of a new address alone."""
    from fraudops.geoip import keyed_hash
    from serving.geoip_store import GeoIpStore

    store = GeoIpStore(path, "bench-ip-hash-key")
    store.load()
    rng = random.Random(5)
    ips = [str(ipaddress.IPv4Address(rng.randrange(1 << 24, 223 << 24))) for _ in range(n)]
    lines = [f"IP enrichment in process, {n:,} random IPv4 addresses, CPU per address:"]
    for label in ("new", "seen"):
        started = time.process_time()
        for ip in ips:
            store.located(ip)
        lines.append(f"  {label:<5} lookup and keyed hash "
                     f"{(time.process_time() - started) / n * 1e6:.2f} µs")  # fmt: skip
    others = [str(ipaddress.IPv4Address(rng.randrange(1 << 24, 223 << 24))) for _ in range(n)]
    parts = {"lookup": store.current.lookup.__wrapped__, "keyed hash": keyed_hash("bench")}
    for label, fn in parts.items():
        started = time.process_time()
        for ip in others:
            fn(ip)
        lines.append(f"  new, {label} alone {(time.process_time() - started) / n * 1e6:.2f} µs")
    store.current.close()
    return lines
