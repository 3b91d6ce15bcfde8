"""`make bench`: the serving benchmark, all parts side by side in one run.

Starts its own server and scorer processes against the running Kafka and Postgres (a fresh
database and fresh topics, removed afterwards) with two tiny TFLite models, then prints
inline Score latency over gRPC on loopback, ScoreBatch per-transaction cost, Kafka-fed
throughput of one scorer (scores counted in Kafka and Postgres), and client-observed
latency and failures during a hot reload against steady state. Repeated rounds; medians.
`--profile` also runs one scorer round under cProfile and prints where the time goes."""

from __future__ import annotations

import argparse
import pstats
from dataclasses import replace
from pathlib import Path

from bench import inline, stream
from bench.common import LOG_LEVEL, STOP_S, transactions, workspace
from fraudops.settings import load_settings
from tests.helpers.stack import (
    channel_to,
    create_topics,
    delete_topics,
    free_port,
    loopback_settings,
    port_open,
    python_process,
    wait_serving,
    wait_until,
)


def run_inline(settings, work: Path, built: Path, calls: int, rounds: int) -> list[str]:
    """Server process: latency rounds, then a hot reload under a steady client."""
    topics = create_topics(settings.kafka_bootstrap_servers, "bench")
    settings = replace(settings, **topics)
    try:
        server = python_process(["-m", "serving.server"], settings, work / "server.log", STOP_S)
        with server, channel_to(settings.grpc_port) as channel:
            wait_serving(channel, timeout=120)
            latency = inline.score_latency(settings.grpc_port, calls, rounds)
            reload = inline.hot_reload(settings.grpc_port, built, settings.model_dir, "v2")
        noop_port = free_port()
        noop = ["-m", "bench.noop_server", str(noop_port)]
        with python_process(noop, settings, work / "noop.log", STOP_S):
            wait_until(lambda: port_open("127.0.0.1", noop_port), "the no-op server", 60)
            txs = transactions(calls + 500, users=5000, seed=1, prefix="noop")
            latency.noop_rounds = inline.call_latency(noop_port, txs, 500, rounds)
    finally:
        delete_topics(settings.kafka_bootstrap_servers, list(topics.values()))
    return inline.report(latency, reload)


def profile_lines(path: Path, top: int = 18) -> list[str]:
    import io

    out = io.StringIO()
    pstats.Stats(str(path), stream=out).sort_stats("tottime").print_stats(top)
    return ["scorer profile (cProfile, one round, by own time):", out.getvalue()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000, help="Score calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stream-n", type=int, default=100_000, help="transactions per round")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    base = load_settings().with_local_services()
    with workspace(base.database_url, "fraudops-bench") as (work, built, url):
        settings = loopback_settings(
            base, database_url=url, model_dir=work / "serving", log_level=LOG_LEVEL
        )
        lines = run_inline(settings, work, built, args.calls, args.rounds)
        drains = [stream.drain(settings, args.stream_n, seed, work, None)
                  for seed in range(1, args.rounds + 1)]  # fmt: skip
        lines += stream.report(drains, args.stream_n)
        if args.profile:
            stream.drain(settings, args.stream_n, 99, work, work / "scorer.prof")
            lines += profile_lines(work / "scorer.prof")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
