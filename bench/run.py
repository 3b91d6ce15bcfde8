"""`make bench`: the serving benchmark, all parts side by side in one run.

Starts its own server and scorer processes against the running Kafka and Postgres (a fresh
database and fresh topics, removed afterwards) and its own redis-server (a free loopback
port, append-only file, as served), with two tiny TFLite models, then prints:
- auth: Score latency on one server without a token (Score opened to anonymous callers)
  beside with one, their rounds in turn: what authenticating a caller costs;
- inline: Score latency over gRPC on loopback with per-user state in memory beside in
  Redis (two servers, their rounds in turn), beside a no-op gRPC server; ScoreBatch
  per-transaction cost; client latency and failures during a hot reload against steady
  state;
- capacity: Score calls/s at `--clients` concurrent clients with 1 and with 2 server
  processes (Redis state), from Python clients and, when built (`make bench-tools`), the Go
  client in bench/loadgen, with the load average and the CPU per call of both sides;
- geoip: Score latency and Kafka-fed throughput (in-memory state) with IP enrichment off
  (no database) beside on (the real country database and the keyed hash), the same located
  transactions, rounds in turn; the scorer for two address mixes: realistic (as the
  simulator draws them, users coming back) and all-new (the worst case);
- stream: Kafka-fed throughput of one in-memory scorer beside 1 and 2 scorers with Redis
  state (scores counted in Kafka and Postgres), and Redis round trips and bytes per
  transaction;
- cluster: Kafka-fed throughput with one Redis node beside a local Redis Cluster (3 masters,
  3 replicas), and 1 beside 3 scorers on the cluster, with the CPU per transaction of the
  scorers and of Redis, and what a core holds.
Repeated rounds; medians. `--parts` runs some of them alone; `--profile` also runs one
Redis-state scorer round under cProfile and prints where the time goes. `--rules 0,10,100`
instead compares rule counts: the inline and stream parts run one server (scorer) per count,
each on a database serving that many rules and a user list of `--list-size` entries,
published as analysts publish them (bench/rules.py), side by side."""

from __future__ import annotations

import argparse
import contextlib
import os
import pstats
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import redis

from bench import capacity, inline, stream
from bench import rules as bench_rules
from bench.common import (
    ADDRESS_MIXES,
    LOG_LEVEL,
    STOP_S,
    median,
    seen_share,
    transactions,
    workspace,
)
from devstack import with_local_kafka_login
from fraudops.settings import Settings, load_settings
from testkit.redis_cluster import RedisClusterServers
from testkit.redis_server import RedisServer
from testkit.stack import (
    GEOIP_DB,
    channel_to,
    create_topics,
    delete_topics,
    free_port,
    issue_token,
    loopback_settings,
    port_open,
    python_process,
    wait_serving,
    wait_until,
)

PARTS = ("inline", "auth", "capacity", "geoip", "stream", "cluster")
# Partitions of the cluster part's topics: 3 scorers get 4 each.
CLUSTER_PARTITIONS = 12


def serving(settings: Settings, log: Path):
    """A server process; the caller waits for it to answer."""
    return python_process(["-m", "serving.server"], settings, log, STOP_S)


def run_inline(
    settings, redis_server: RedisServer, work: Path, built: Path, calls: int, rounds: int
):
    """An in-memory and a Redis-state server side by side, their latency rounds in turn;
    then a hot reload under a steady client (in memory); then the no-op floor."""
    topics = create_topics(settings, "bench")
    settings = replace(settings, **topics)
    redis_url = redis_server.url
    shared = replace(settings, redis_url=redis_url, grpc_port=free_port())
    token = settings.client_token
    try:
        with (
            serving(settings, work / "server.log"),
            serving(shared, work / "server-redis.log"),
            channel_to(settings.grpc_port) as channel,
            channel_to(shared.grpc_port) as channel_redis,
        ):
            wait_serving(channel, timeout=120)
            wait_serving(channel_redis, timeout=120)
            ports = [settings.grpc_port, shared.grpc_port]
            latency, in_redis = inline.interleaved_latency(ports, calls, rounds, 500, [token] * 2)
            reload = inline.hot_reload(settings.grpc_port, built, settings.model_dir, "v2", token)
        noop_port = free_port()
        noop = ["-m", "bench.noop_server", str(noop_port)]
        with python_process(noop, settings, work / "noop.log", STOP_S):
            wait_until(lambda: port_open("127.0.0.1", noop_port), "the no-op server", 60)
            txs = transactions(calls + 500, users=5000, seed=1, prefix="noop")
            latency.noop_rounds = inline.call_latency(noop_port, txs, 500, rounds)
    finally:
        delete_topics(settings, list(topics.values()))
    ping_us = inline.redis_ping_us(redis_url)
    pinned = inline.pinned_ping_us(redis_url, redis_server.pid)
    return inline.report(latency, reload) + inline.state_report(latency, in_redis, ping_us, pinned)


def run_auth(settings, work: Path, calls: int, rounds: int) -> list[str]:
    """One server with Score open to anonymous callers: the same calls without and with
    the bench caller's token, their rounds in turn."""
    topics = create_topics(settings, "bench-auth")
    open_score = replace(settings, grpc_anonymous_methods="Score,ScoreBatch", **topics)
    try:
        with serving(open_score, work / "server-auth.log"), channel_to(settings.grpc_port) as ch:
            wait_serving(ch, timeout=120)
            port = settings.grpc_port
            anonymous, with_token = inline.interleaved_latency(
                [port, port], calls, rounds, 500, [None, settings.client_token]
            )
    finally:
        delete_topics(settings, list(topics.values()))
    return inline.auth_report(anonymous, with_token)


def run_geoip(
    settings, work: Path, calls: int, rounds: int, stream_n: int, profile: bool = False
) -> list[str]:
    """Two servers, enrichment off and on, their latency rounds in turn (all-new addresses);
    then scorer rounds for each address mix (ADDRESS_MIXES), an off and an on scorer side by
    side in each (`stream.drain_beside`). `off` has no database file: every address reads
    as unknown. With `profile`, one more realistic round with the on scorer under cProfile."""
    # In a directory of its own: the scorer watches the file's directory, and the work
    # directory takes every process's log lines.
    off = replace(settings, geoip_db=work / "no-geoip" / "absent.mmdb")
    on = replace(settings, geoip_db=GEOIP_DB, ip_hash_key="bench-ip-hash-key",
                 grpc_port=free_port())  # fmt: skip
    topics = create_topics(settings, "bench-geoip")
    try:
        with (
            serving(replace(off, **topics), work / "server-geoip-off.log"),
            serving(replace(on, **topics), work / "server-geoip-on.log"),
            channel_to(off.grpc_port) as ch_off, channel_to(on.grpc_port) as ch_on,
        ):  # fmt: skip
            wait_serving(ch_off, timeout=120)
            wait_serving(ch_on, timeout=120)
            latency = inline.interleaved_latency(
                [off.grpc_port, on.grpc_port], calls, rounds, 500, [settings.client_token] * 2,
                located="all-new",
            )  # fmt: skip
    finally:
        delete_topics(settings, list(topics.values()))
    drains = {(mix, label): [] for mix in ADDRESS_MIXES for label in ("off", "on")}
    for seed in range(1, rounds + 1):
        # Both at once on the same transactions, released off first in odd rounds and on
        # first in even ones.
        pair = {"off": off, "on": on} if seed % 2 else {"on": on, "off": off}
        for mix in ADDRESS_MIXES:
            for label, result in stream.drain_beside(pair, stream_n, seed, work, mix).items():
                drains[mix, label].append(result)
    lines = inline.geoip_report(*latency)
    for mix in ADDRESS_MIXES:
        lines += geoip_stream_lines(mix, drains[mix, "off"], drains[mix, "on"], stream_n)
    lines += inline.lookup_report(GEOIP_DB)
    if profile:
        stream.drain_beside({"off": off, "on": on}, stream_n, 99, work, "realistic",
                            profile=work / "scorer-geoip.prof")  # fmt: skip
        lines += profile_lines(work / "scorer-geoip.prof", "one enrichment-on realistic round")
    return lines


def geoip_stream_lines(mix: str, off: list, on: list, n: int) -> list[str]:
    """One address mix's scorer rounds, enrichment off beside on: rate and CPU per tx."""
    seen = seen_share(stream.round_transactions(n, 1, "seen", mix))
    lines = [f"address mix {mix}: {seen:.0%} of transactions from an address seen earlier in "
             "the round (or none)"]  # fmt: skip
    span = "off and on side by side, each draining a held backlog: release .. last stored"
    lines += stream.report({"enrichment off": off, "enrichment on": on}, n, span=span)[:-2]
    off_cpu, on_cpu = (median([r.scorer_cpu_us for r in d]) for d in (off, on))
    paired = [b.scorer_cpu_us - a.scorer_cpu_us for a, b in zip(off, on, strict=True)]
    cpu_ratios = [b.scorer_cpu_us / a.scorer_cpu_us for a, b in zip(off, on, strict=True)]
    rates = [b.rate / a.rate for a, b in zip(off, on, strict=True)]
    cpu = (
        f"scorer CPU per tx off {off_cpu:.1f} µs, on {on_cpu:.1f} µs, "
        f"on/off {median(cpu_ratios):.3f}x ({median(paired):+.1f} µs)"
    )
    rate = f"throughput on/off {median(rates):.3f}x (target: 0.95x at least)"
    lines.append(f"  {mix}, median of {len(off)} alternated rounds (each round's on beside "
                 f"its off): {cpu}; {rate}")  # fmt: skip
    lines.append(f"    per round: CPU {_each(paired, '{:+.1f} µs')}; throughput on/off "
                 f"{_each(rates, '{:.2f}x')}")  # fmt: skip
    return lines


def _each(values: list[float], form: str) -> str:
    return ", ".join(form.format(v) for v in values)


def run_capacity(settings, redis_url: str, work: Path, clients: int, seconds: float):
    """The same clients against 1, then 2 server processes sharing the Redis state: Python
    clients, then the Go client when it is built."""
    go = capacity.find_loadgen()
    results = []
    for processes in (1, 2):
        s = replace(settings, redis_url=redis_url, grpc_port=free_port(), server_workers=processes)
        log = work / f"server-{processes}p.log"
        with serving(s, log) as server, channel_to(s.grpc_port) as channel:
            wait_serving(channel, timeout=120)
            capacity.wait_for_workers(s.grpc_port, processes, s.client_token)
            results.append(capacity.measure(
                s.grpc_port, s.client_token, server.pid, processes, clients, seconds
            ))  # fmt: skip
            if go is not None:
                results.append(capacity.measure_go(
                    go, s.grpc_port, server.pid, processes, clients, seconds, work,
                    s.client_token,
                ))  # fmt: skip
    results.sort(key=lambda r: r.client != "Python")
    return capacity.report(results, go_missing=go is None)


def run_stream(settings, redis_url: str, work: Path, n: int, rounds: int) -> list[str]:
    """In-memory single scorer, then 1 and 2 scorers with Redis (emptied before each round)."""
    shared = replace(settings, redis_url=redis_url)
    client = redis.Redis.from_url(redis_url)

    def rounds_of(s: Settings, scorers: int) -> list[stream.DrainResult]:
        out = []
        for seed in range(1, rounds + 1):
            client.flushall()
            out.append(stream.drain(s, n, seed, work, None, scorers))
        return out

    try:
        configs = {
            "in memory, 1 scorer": rounds_of(settings, 1),
            "Redis, 1 scorer": rounds_of(shared, 1),
            "Redis, 2 scorers (together)": rounds_of(shared, 2),
        }
    finally:
        client.close()
    return stream.report(configs, n)


@contextlib.contextmanager
def rule_databases(server_url: str, counts: list[int], list_size: int) -> Iterator[dict]:
    """rule count -> a database serving that many rules and the list."""
    with contextlib.ExitStack() as stack:
        yield {n: stack.enter_context(bench_rules.serving_database(server_url, n, list_size))
               for n in counts}  # fmt: skip


def run_rules_inline(settings, databases: dict, work: Path, calls: int, rounds: int):
    """One in-memory server per rule count, their latency rounds in turn (each server's
    callers are those of its own database)."""
    topics = create_topics(settings, "bench")
    settings = replace(settings, **topics)
    try:
        with contextlib.ExitStack() as stack:
            ports, tokens = [], []
            for n, url in databases.items():
                s = replace(settings, database_url=url, grpc_port=free_port())
                stack.enter_context(serving(s, work / f"server-rules{n}.log"))
                ports.append(s.grpc_port)
                tokens.append(issue_token(url, "bench"))
            for port in ports:
                wait_serving(stack.enter_context(channel_to(port)), timeout=300)
            results = inline.interleaved_latency(ports, calls, rounds, 500, tokens)
    finally:
        delete_topics(settings, list(topics.values()))
    return inline.rules_report(dict(zip(databases, results, strict=True)))


def run_rules_stream(settings, databases: dict, work: Path, n: int, rounds: int) -> list[str]:
    """One in-memory scorer per rule count, rounds in turn (0, 10, 100, 0, 10, 100, ...)."""
    out: dict[str, list[stream.DrainResult]] = {f"{c} rules": [] for c in databases}
    for seed in range(1, rounds + 1):
        for count, url in databases.items():
            result = stream.drain(replace(settings, database_url=url), n, seed, work)
            out[f"{count} rules"].append(result)
    return stream.report(out, n)


def run_cluster(settings, redis_url: str, work: Path, n: int, rounds: int) -> list[str]:
    """One Redis node beside a Redis Cluster (3 masters, 3 replicas) with 1 and 3 scorers,
    on the same topics' layout; Redis emptied before each round."""
    cluster = RedisClusterServers(work / "redis-cluster").start()

    def rounds_of(url: str, scorers: int) -> list[stream.DrainResult]:
        out = []
        for seed in range(1, rounds + 1):
            for node in stream.redis_nodes(url):
                with redis.Redis.from_url(node) as client:
                    if client.info("replication")["role"] == "master":  # replicas follow
                        client.flushall()
            s = replace(settings, redis_url=url)
            out.append(stream.drain(s, n, seed, work, None, scorers, CLUSTER_PARTITIONS))
        return out

    try:
        configs = {
            "Redis, 1 node, 1 scorer": rounds_of(redis_url, 1),
            "Redis Cluster, 1 scorer": rounds_of(cluster.url, 1),
            "Redis Cluster, 3 scorers": rounds_of(cluster.url, 3),
        }
    finally:
        cluster.stop()
    return stream.report(configs, n, CLUSTER_PARTITIONS)


def run_profile(settings, redis_url: str, work: Path, n: int) -> list[str]:
    """One Redis-state scorer round under cProfile."""
    redis.Redis.from_url(redis_url).flushall()
    stream.drain(replace(settings, redis_url=redis_url), n, 99, work, work / "scorer.prof")
    return profile_lines(work / "scorer.prof", "one Redis-state round")


def profile_lines(path: Path, what: str, top: int = 18) -> list[str]:
    """The scorer's main thread: the top functions by own time, then the project's own
    functions by cumulative time (what each step of a batch costs, callees included)."""
    import io

    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(r"/(serving|fraudops)/", top)
    return [f"scorer profile (cProfile, {what}, main thread):", out.getvalue()]


def run_rules(settings, server_url: str, work: Path, counts: list[int], parts, args) -> list[str]:
    lines: list[str] = []
    with rule_databases(server_url, counts, args.list_size) as databases:
        if "inline" in parts:
            lines += run_rules_inline(settings, databases, work, args.calls, args.rounds)
        if "stream" in parts:
            lines += run_rules_stream(settings, databases, work, args.stream_n, args.rounds)
        if args.profile:  # the scorer serving the most rules
            url = databases[max(databases)]
            stream.drain(replace(settings, database_url=url), args.stream_n, 99, work,
                         work / "scorer.prof")  # fmt: skip
            lines += profile_lines(work / "scorer.prof", "the most rules")
    return [*lines, load_average("at the end")]


def load_average(when: str) -> str:
    """The 1, 5 and 15 minute load averages: the machine is shared, so each run says how
    busy it was."""
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"load average {when}: {load} ({os.cpu_count()} cores)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated: {PARTS}")
    parser.add_argument("--calls", type=int, default=5000, help="Score calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16, help="concurrent capacity clients")
    parser.add_argument("--capacity-seconds", type=float, default=10.0)
    parser.add_argument("--stream-n", type=int, default=100_000, help="transactions per round")
    parser.add_argument("--profile", action="store_true", help="profile one scorer round")
    parser.add_argument("--rules", help="compare rule counts instead, e.g. 0,10,100")
    parser.add_argument("--list-size", type=int, default=1_000_000, help="with --rules")
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    if unknown := set(parts) - set(PARTS):
        parser.error(f"unknown part(s) {sorted(unknown)}; choose from {PARTS}")
    base = with_local_kafka_login(load_settings().with_local_services())
    with workspace(base.database_url, "fraudops-bench") as (work, built, url):
        settings = loopback_settings(
            base, database_url=url, model_dir=work / "serving", log_level=LOG_LEVEL,
            redis_url=None, client_token=issue_token(url, "bench"),
        )  # fmt: skip
        if args.rules:
            counts = [int(c) for c in args.rules.split(",")]
            lines = run_rules(settings, base.database_url, work, counts, parts, args)
            print("\n".join(lines))
            return 0
        redis_server = RedisServer(work / "redis").start()
        shared = redis_server.url
        lines: list[str] = [load_average("at the start")]
        try:
            if "inline" in parts:
                lines += run_inline(settings, redis_server, work, built, args.calls, args.rounds)
            if "auth" in parts:
                lines += run_auth(settings, work, args.calls, args.rounds)
            if "capacity" in parts:
                seconds = args.capacity_seconds
                lines += run_capacity(settings, shared, work, args.clients, seconds)
            if "geoip" in parts:
                geoip_profile = args.profile and parts == ["geoip"]
                lines += run_geoip(settings, work, args.calls, args.rounds, args.stream_n,
                                   geoip_profile)  # fmt: skip
            if "stream" in parts:
                lines += run_stream(settings, shared, work, args.stream_n, args.rounds)
            if "cluster" in parts:
                lines += run_cluster(settings, shared, work, args.stream_n, args.rounds)
            if args.profile and parts != ["geoip"]:
                lines += run_profile(settings, shared, work, args.stream_n)
        finally:
            redis_server.stop()
        # Printed before the workspace is cleaned up: a failing cleanup loses no figures.
        print("\n".join([*lines, load_average("at the end")]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
