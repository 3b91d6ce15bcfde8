"""Toy PaySim-style transactions for the modelling tests (and ad-hoc benchmarks), made
with numpy alone so the tests do not depend on the simulator or the synthesizer.

Fraud comes in short bursts per compromised user, mostly TRANSFER / CASH_OUT that drain the
origin account into a mule whose balances stay at zero, more often at night. Some legit
rows drain too and some fraud does not, so the problem is learnable but not trivial, and
the velocity features carry signal on their own (the no-balance ablation has work to do).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fraudops.schema import TRANSACTION_COLUMNS, TRANSACTION_TYPES

START = 1_700_000_000
LEGIT_TYPE_P = (0.22, 0.35, 0.01, 0.34, 0.08)  # CASH_IN, CASH_OUT, DEBIT, PAYMENT, TRANSFER


def _legit(rng: np.random.Generator, n: int, n_users: int, span: int) -> dict:
    types = rng.choice(TRANSACTION_TYPES, size=n, p=LEGIT_TYPE_P)
    amount = np.round(rng.lognormal(7.5, 1.2, n), 2)
    old_o = np.round(rng.lognormal(9.0, 1.5, n), 2)
    drains = rng.random(n) < 0.01
    amount = np.where(drains, old_o, amount)
    incoming = types == "CASH_IN"
    new_o = np.where(incoming, old_o + amount, np.maximum(old_o - amount, 0.0))
    old_d = np.where(types == "PAYMENT", 0.0, np.round(rng.lognormal(10.0, 1.5, n), 2))
    new_d = np.where(types == "PAYMENT", 0.0, np.where(incoming, old_d, old_d + amount))
    return {
        "user_id": rng.integers(1, n_users + 1, n),
        "timestamp": START + rng.integers(0, span, n),
        "type": types,
        "amount": amount,
        "old_balance_orig": old_o,
        "new_balance_orig": new_o,
        "old_balance_dest": old_d,
        "new_balance_dest": new_d,
        "is_unauthorized_overdraft": np.zeros(n),
        "is_fraud": np.zeros(n, dtype=np.int8),
    }


def _fraud(rng: np.random.Generator, n: int, n_users: int, span: int) -> dict:
    burst = rng.integers(1, 5, size=max(n // 2, 1))
    burst = burst[: np.searchsorted(np.cumsum(burst), n) + 1]
    burst[-1] -= burst.sum() - n
    night = rng.random(len(burst)) < 0.6
    day_start = START + (rng.integers(0, max(span // 86400, 1), len(burst)) * 86400)
    start = day_start + np.where(night, rng.integers(0, 5 * 3600, len(burst)), 0)
    start += np.where(night, 0, rng.integers(0, 86400, len(burst)))
    ts = np.repeat(start, burst) + rng.integers(0, 1800, n)
    user = np.repeat(rng.integers(1, n_users + 1, len(burst)), burst)
    old_o = np.round(rng.lognormal(10.0, 1.2, n), 2)
    drains = rng.random(n) < 0.7
    amount = np.where(drains, old_o, np.round(old_o * rng.uniform(0.2, 0.9, n), 2))
    mule = rng.random(n) < 0.7
    old_d = np.where(mule, 0.0, np.round(rng.lognormal(10.0, 1.5, n), 2))
    return {
        "user_id": user,
        "timestamp": np.minimum(ts, START + span - 1),
        "type": rng.choice(["TRANSFER", "CASH_OUT"], size=n),
        "amount": amount,
        "old_balance_orig": old_o,
        "new_balance_orig": old_o - amount,
        "old_balance_dest": old_d,
        "new_balance_dest": np.where(mule, 0.0, old_d + amount),
        "is_unauthorized_overdraft": (rng.random(n) < 0.05).astype(np.float64),
        "is_fraud": np.ones(n, dtype=np.int8),
    }


def make_transactions(
    n: int, fraud_rate: float = 0.02, seed: int = 0, days: int = 30, start_day: int = 0
) -> pd.DataFrame:
    """`n` transactions over `days` days (starting `start_day` days after START), with
    exactly TRANSACTION_COLUMNS, sorted by timestamp."""
    rng = np.random.default_rng(seed)
    n_fraud = max(int(round(n * fraud_rate)), 1)
    n_users = max(n // 20, 10)
    span = days * 86400
    parts = [_legit(rng, n - n_fraud, n_users, span), _fraud(rng, n_fraud, n_users, span)]
    df = pd.concat([pd.DataFrame(p) for p in parts], ignore_index=True)
    df["timestamp"] = df["timestamp"].astype(np.int64) + start_day * 86400
    df = df.sort_values("timestamp", kind="stable").reset_index(drop=True)
    df["transaction_id"] = [f"tx-{seed}-{i:08d}" for i in range(len(df))]
    df["dest_id"] = rng.integers(1, 10 * n_users, len(df)).astype(np.int64)
    df["user_id"] = df["user_id"].astype(np.int64)
    return df[list(TRANSACTION_COLUMNS)]
