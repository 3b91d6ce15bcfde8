"""`python -m bench.stripe`: the inline Stripe decision (`POST /stripe/decide`, HTTP/1.1
keep-alive on loopback) beside gRPC `FraudScoring.Score`, in one run against the same
model, the running Kafka and Postgres (a fresh database and fresh topics), and an in-memory
feature state in each process. Sequential calls from one client; repeated rounds."""

from __future__ import annotations

import argparse
import time

import httpx

from bench import inline
from bench.common import LOG_LEVEL, STOP_S, Stats, median, transactions, workspace
from devstack import with_local_kafka_login
from fraudops.settings import load_settings
from testkit.stack import (
    channel_to,
    create_topics,
    delete_topics,
    free_port,
    issue_token,
    loopback_settings,
    python_process,
    wait_serving,
    wait_until,
)

KEY = "bench-decide-key"


def intents(n: int, seed: int) -> list[dict]:
    """PaymentIntents before confirmation, from the benchmark's transactions."""
    return [
        {"id": f"pi_bench_{seed}_{i}", "object": "payment_intent",
         "amount": int(tx.amount * 100), "currency": "usd", "customer": f"cus_{tx.user_id}",
         "created": int(time.time()) - 60}
        for i, tx in enumerate(transactions(n, users=5000, seed=seed, prefix="stripe"))
    ]  # fmt: skip


def decide_latency(port: int, calls: int, rounds: int, warmup: int = 500) -> tuple[list, list]:
    """Client-observed latency rounds of /stripe/decide, and the server-side latency_us."""
    headers = {"X-Api-Key": KEY}
    out, server_us = [], []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
        for body in intents(warmup, seed=0):
            client.post("/stripe/decide", json=body).raise_for_status()
        for r in range(rounds):
            samples = []
            for body in intents(calls, seed=r + 1):
                started = time.perf_counter()
                reply = client.post("/stripe/decide", json=body)
                samples.append(time.perf_counter() - started)
                server_us.append(reply.json()["latency_us"])
            out.append(Stats(samples))
    return out, server_us


def _answers(port: int) -> bool:
    try:
        body = intents(1, seed=99)[0]
        reply = httpx.post(f"http://127.0.0.1:{port}/stripe/decide", json=body,
                           headers={"X-Api-Key": KEY}, timeout=5)  # fmt: skip
    except httpx.TransportError:
        return False
    return reply.status_code == 200


def _line(name: str, rounds: list[Stats]) -> str:
    p50, p99 = median([s.pct(50) for s in rounds]), median([s.pct(99) for s in rounds])
    return f"{name:<34} p50 {p50:7.0f} µs  p99 {p99:7.0f} µs  (median of {len(rounds)} rounds)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    base = with_local_kafka_login(load_settings().with_local_services())
    with workspace(base.database_url, "fraudops-bench-stripe") as (work, _built, url):
        topics = create_topics(base, "bench-stripe")
        settings = loopback_settings(
            base, database_url=url, model_dir=work / "serving", log_level=LOG_LEVEL,
            redis_url=None, stripe_port=free_port(), stripe_decide_api_key=KEY, **topics,
            client_token=issue_token(url, "bench"),
        )  # fmt: skip
        try:
            server = python_process(["-m", "serving.server"], settings, work / "server.log", STOP_S)
            app = ["-m", "integrations.stripe.app"]
            stripe_app = python_process(app, settings, work / "stripe.log", STOP_S)
            with server, stripe_app, channel_to(settings.grpc_port) as channel:
                wait_serving(channel, timeout=120)
                wait_until(lambda: _answers(settings.stripe_port), "the Stripe endpoint", 120)
                grpc_rounds = inline.score_latency(
                    settings.grpc_port, args.calls, args.rounds, token=settings.client_token
                )
                http_rounds, http_server = decide_latency(
                    settings.stripe_port, args.calls, args.rounds
                )
        finally:
            delete_topics(base, list(topics.values()))
    print(_line("gRPC FraudScoring.Score", grpc_rounds.score_rounds))
    print(_line("HTTP POST /stripe/decide", http_rounds))
    print(f"{'server-side scoring, median':<34} gRPC {median(grpc_rounds.server_us):.0f} µs, "
          f"decide {median(http_server):.0f} µs")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
