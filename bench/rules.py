"""What analysts' rules add per transaction: RuleSet.decide (the scoring core's rule step)
on one transaction (inline) and on a 2000-row micro-batch (stream), with 0, 10 and 100
rules and a user list of 1,000,000 entries, side by side. The rule mix: a tenth read a list,
the rest compare amounts, types, channels, velocity and the score."""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np

from fraudops.features import N_FEATURES
from fraudops.rules import ListIndex, Rule, RuleSet


def rules(n: int) -> list[Rule]:
    shapes = [
        "in_list('blocked_users', user_id) && amount > {i}.0",
        "amount > {k}.0 && type == 'TRANSFER'",
        "tx_count_1h > {i}.0 || score > 0.99 && channel == 'web{i}'",
        "amount_sum_24h > {k}.0 && type in ['CASH_OUT', 'TRANSFER']",
    ]
    return [Rule(f"r{i}", "review", (shapes[0] if i % 10 == 0 else shapes[1 + i % 3])
                 .format(i=i, k=100_000 + i)) for i in range(n)]  # fmt: skip


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--list-size", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args(argv)
    items = ((str(u), math.inf) for u in range(1, args.list_size + 1))
    lists = {"blocked_users": ListIndex.build("user", items)}
    print(f"{'rules':>5} {'inline us/tx (p50)':>19} {'stream us/tx':>13} {'stream tx/s':>12}")
    for n in (0, 10, 100):
        rule_set = RuleSet(str(n), rules(n), lists)
        inline = per_transaction_us(rule_set, 1, args.repeats)
        stream = per_transaction_us(rule_set, 2000, max(3, args.repeats // 100))
        rate = 1e6 / stream if stream else float("inf")
        print(f"{n:>5} {inline:>19.1f} {stream:>13.1f} {rate:>12,.0f}")


if __name__ == "__main__":
    main()
