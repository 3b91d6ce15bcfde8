"""What analysts' rules add per transaction: RuleSet.decide (the scoring core's rule step)
on one transaction (inline) and on a 2000-row micro-batch (stream), with 0, 10 and 100
rules and a user list of 1,000,000 entries, side by side, each set compiled
(fraudops.rule_compiler) and on the CEL interpreter alone. The rule mix: a tenth read a list,
the rest compare amounts, types, channels, velocity and the score. `serving_database` sets
the same rules and list up in Postgres, published as analysts publish them, for the inline
and stream benchmarks' `--rules` (bench/run.py)."""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np

from fraudops import rule_sets
from fraudops.db import connect
from fraudops.features import N_FEATURES
from fraudops.rules import ListIndex, Rule, RuleSet

LIST_NAME = "blocked_users"
# Above every user id the benchmarks' transactions carry: a lookup misses, as most do.
FIRST_LISTED = 10_000_001
WHO = ("bench", "benchmark set-up")


def rules(n: int) -> list[Rule]:
    shapes = [
        "in_list('blocked_users', user_id) && amount > {i}.0",
        "amount > {k}.0 && type == 'TRANSFER'",
        "tx_count_1h > {i}.0 || score > 0.99 && channel == 'web{i}'",
        "amount_sum_24h > {k}.0 && type in ['CASH_OUT', 'TRANSFER']",
    ]
    return [Rule(f"r{i}", "review", (shapes[0] if i % 10 == 0 else shapes[1 + i % 3])
                 .format(i=i, k=100_000 + i)) for i in range(n)]  # fmt: skip


def _fill_list(cur, size: int) -> None:
    rule_sets.create_list(cur, LIST_NAME, "user", *WHO)
    for start in range(FIRST_LISTED, FIRST_LISTED + size, rule_sets.MAX_ITEMS_PER_CALL):
        end = min(start + rule_sets.MAX_ITEMS_PER_CALL, FIRST_LISTED + size)
        rule_sets.add_items(cur, LIST_NAME, [str(u) for u in range(start, end)], *WHO)


def _publish(cur, rule_set: list[Rule]) -> None:
    """Save, backtest-record and publish each rule live, as the console does."""
    week = (datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 1, 8, tzinfo=UTC))
    for position, rule in enumerate(rule_set):
        rule_sets.save_rule(cur, rule, position, *WHO)
        rule_sets.record_backtest(cur, rule, week, {}, WHO[0])
        rule_sets.publish(cur, rule.name, "live", *WHO)


@contextlib.contextmanager
def serving_database(server_url: str, n: int, list_size: int) -> Iterator[str]:
    """A fresh database serving `n` of `rules(n)` live and a user list of `list_size`
    entries; dropped afterwards."""
    from testkit.stack import fresh_database

    with fresh_database(server_url, f"fraudops_bench_rules{n}") as url:
        conn = connect(url)
        try:
            with conn, conn.cursor() as cur:
                _fill_list(cur, list_size)
                _publish(cur, rules(n))
        finally:
            conn.close()
        yield url


def per_transaction_us(rule_set: RuleSet, size: int, repeats: int) -> float:
    base = {"type": "PAYMENT", "channel": "web", "timestamp": 1_700_000_000}
    txs = [{**base, "transaction_id": f"t{i}", "user_id": 2_000_000 + i, "amount": 120.0 + i}
           for i in range(size)]  # fmt: skip
    features = np.zeros((size, N_FEATURES), dtype=np.float32)
    scores, bands = np.full(size, 0.2), np.zeros(size, dtype=np.int64)
    times = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        rule_set.decide(txs, features, scores, bands)
        times.append((time.perf_counter_ns() - started) / size / 1000)
    return statistics.median(times)


def in_core_us(sets: dict[str, RuleSet], calls: int) -> dict[str, list[float]]:
    """Thread CPU of `ScoringCore.score` on one transaction (features, model, reasons, rules)
    with each of `sets`: one core per set, each transaction given to every core in turn, so
    the rule step is timed inside a whole scoring call, caches as cold as a request's."""
    import tempfile
    from pathlib import Path

    from bench.common import transactions
    from fraudops.schema import proto_to_dict
    from serving.model_store import ModelStore
    from serving.scoring import RuleSource, ScoringCore
    from testkit.tiny_model import build_model_dir

    with tempfile.TemporaryDirectory() as work:
        with contextlib.redirect_stdout(io.StringIO()):  # TensorFlow's export chatter
            build_model_dir(Path(work) / "v1", "v1")
        cores = {}
        for label, rule_set in sets.items():
            store = ModelStore(Path(work), prewarm=1)
            store.load_latest()
            cores[label] = ScoringCore(store, rules=RuleSource(rule_set))
    times: dict[str, list[float]] = {label: [] for label in sets}
    labels = list(cores)
    for k, tx in enumerate(transactions(calls, users=5000, seed=3, prefix="core")):
        turn = k % len(labels)  # each core follows each other as often: caches alike
        for label in labels[turn:] + labels[:turn]:
            core = cores[label]
            started = time.thread_time_ns()
            core.score([proto_to_dict(tx)])
            if k >= calls // 10:  # the first tenth warms up
                times[label].append((time.thread_time_ns() - started) / 1000)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--list-size", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--core-calls", type=int, default=5000,
                        help="transactions through the whole scoring core (0: skip)")  # fmt: skip
    args = parser.parse_args(argv)
    items = ((str(u), math.inf) for u in range(FIRST_LISTED, FIRST_LISTED + args.list_size))
    lists = {"blocked_users": ListIndex.build("user", items)}
    print(f"{'rules':>5} {'evaluation':>17} {'inline us/tx (p50)':>19} {'stream us/tx':>13} "
          f"{'stream tx/s':>12}")  # fmt: skip
    for n in (0, 10, 100):
        for interpreter_only in (False, True):
            rule_set = RuleSet(str(n), rules(n), lists, interpreter_only)
            inline = per_transaction_us(rule_set, 1, args.repeats)
            stream = per_transaction_us(rule_set, 2000, max(3, args.repeats // 100))
            rate = 1e6 / stream if stream else float("inf")
            how = "interpreter only" if interpreter_only else "compiled"
            print(f"{n:>5} {how:>17} {inline:>19.1f} {stream:>13.1f} {rate:>12,.0f}")
    if args.core_calls:
        sets = {f"{n} rules": RuleSet(str(n), rules(n), lists) for n in (0, 10, 100)}
        sets["100 rules, interpreter only"] = RuleSet("100i", rules(100), lists, True)
        times = in_core_us(sets, args.core_calls)
        base = statistics.median(times["0 rules"])
        print(f"ScoringCore.score, one transaction, thread CPU p50 ({len(times['0 rules'])} "
              "calls each, the cores in turn per transaction, the order rotating):")  # fmt: skip
        for label, samples in times.items():
            p50 = statistics.median(samples)
            print(f"  {label:<28} {p50:7.1f} µs  ({p50 - base:+.1f} µs over 0 rules)")


if __name__ == "__main__":
    main()
