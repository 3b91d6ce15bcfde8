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
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import inline, stream  # noqa: E402
from bench.common import (  # noqa: E402
    bench_settings,
    build_models,
    delete_topics,
    free_port,
    fresh_database,
    fresh_topics,
    port_open,
    process,
    transactions,
    wait_for,
    wait_serving,
)
from fraudops.modelspec import publish  # noqa: E402
from fraudops.settings import load_settings  # noqa: E402

LOCAL_DATABASE_URL = "postgresql://fraudops@127.0.0.1:55432/fraudops"


def run_inline(settings, work: Path, built: Path, calls: int, rounds: int) -> list[str]:
    """Server process: latency rounds, then a hot reload under a steady client."""
    topics = fresh_topics(settings.kafka_bootstrap_servers)
    settings = replace(settings, **topics)
    try:
        with process(["-m", "serving.server"], settings, work / "server.log"):
            wait_serving(settings.grpc_port)
            latency = inline.score_latency(settings.grpc_port, calls, rounds)
            reload = inline.hot_reload(settings.grpc_port, built, settings.model_dir, "v2")
        noop_port = free_port()
        with process(["-m", "bench.noop_server", str(noop_port)], settings, work / "noop.log"):
            wait_for(lambda: port_open(noop_port), "the no-op server", 60)
            txs = transactions(calls + 500, users=5000, seed=1, prefix="noop")
            latency.noop_rounds = inline.call_latency(noop_port, txs, 500, rounds)
    finally:
        delete_topics(settings.kafka_bootstrap_servers, topics)
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
    base = load_settings()
    if not base.database_url:  # the project's local Postgres (scripts/services.sh up postgres)
        base = replace(base, database_url=LOCAL_DATABASE_URL)
    with (
        tempfile.TemporaryDirectory(prefix="fraudops-bench-") as tmp,
        fresh_database(base.database_url) as url,
    ):
        work = Path(tmp)
        built = build_models(work / "built")
        serving_root = work / "serving"
        publish(built / "v1", serving_root, "v1")
        settings = bench_settings(base, database_url=url, model_dir=serving_root)
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
