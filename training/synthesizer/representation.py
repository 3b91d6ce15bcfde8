"""The row representation the copulas model, and its inverse.

A copula sees amounts and balances on a log scale (log1p, which tames their heavy tails),
the origin's new balance as a mode (credit / outflow / drain / other) and the
destination's as (untracked / credit / debit / other), plus flags for an empty account, so
that drains (new balance exactly 0, amount == balance) and exact balance arithmetic survive
sampling instead of becoming noisy floats; `other` rows (inconsistent balances, frequent in
real PaySim) carry their sampled new balance. It also sees the hour of day, since fraud
keeps different hours. `decode_rows` turns sampled rows back into canonical values."""

from __future__ import annotations

import numpy as np
import pandas as pd

CLASSES = {0: "legit", 1: "fraud"}


NUMERIC = ("hour", "log_amount", "log_old_orig", "log_new_orig", "log_old_dest", "log_new_dest")


TOLERANCE = 0.011  # balances are in cents; float sums may be off by a hair


def _close(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b) <= TOLERANCE


def _impute_log(values: np.ndarray, missing: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """log1p of values, with the `missing` rows (empty accounts, flagged separately) drawn
    from the other rows so that a spike at zero does not distort the fitted marginal."""
    out = np.log1p(values)
    present = out[~missing]
    if missing.any() and len(present):
        out[missing] = rng.choice(present, size=int(missing.sum()))
    return out


def _orig_mode(kind: np.ndarray, amount, old, new) -> np.ndarray:
    inflow = kind == "CASH_IN"
    credit = inflow & _close(new, old + amount)
    drain = ~inflow & (old > 0) & _close(amount, old) & (new <= TOLERANCE)
    outflow = ~inflow & ~drain & _close(new, np.maximum(old - amount, 0.0))
    return np.select([credit, drain, outflow], ["credit", "drain", "outflow"], "other")


def _dest_mode(kind: np.ndarray, amount, old, new) -> np.ndarray:
    untracked = (old <= TOLERANCE) & (new <= TOLERANCE)
    credit = ~untracked & _close(new, old + amount)
    debit = ~untracked & ~credit & _close(new, np.maximum(old - amount, 0.0))
    return np.select([untracked, credit, debit], ["untracked", "credit", "debit"], "other")


def encode_rows(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Canonical transactions -> the copula's columns (see the module docstring)."""
    kind = frame["type"].to_numpy().astype(str)
    amount = frame["amount"].to_numpy(float)
    old_o, new_o = (
        frame["old_balance_orig"].to_numpy(float),
        frame["new_balance_orig"].to_numpy(float),
    )
    old_d, new_d = (
        frame["old_balance_dest"].to_numpy(float),
        frame["new_balance_dest"].to_numpy(float),
    )
    orig_mode, dest_mode = (
        _orig_mode(kind, amount, old_o, new_o),
        _dest_mode(kind, amount, old_d, new_d),
    )
    orig_zero = old_o <= 0
    dest_zero = (old_d <= 0) & (dest_mode != "untracked")
    return pd.DataFrame(
        {
            "hour": (frame["timestamp"].to_numpy() // 3600) % 24,
            "log_amount": np.log1p(amount),
            "log_old_orig": _impute_log(old_o, orig_zero, rng),
            "log_new_orig": _impute_log(new_o, orig_mode != "other", rng),
            "log_old_dest": _impute_log(old_d, dest_zero | (dest_mode == "untracked"), rng),
            "log_new_dest": _impute_log(new_d, dest_mode != "other", rng),
            "orig_mode": orig_mode,
            "dest_mode": dest_mode,
            "orig_zero": np.where(orig_zero, "yes", "no"),
            "dest_zero": np.where(dest_zero, "yes", "no"),
        }
    )


def _money(log_values: np.ndarray) -> np.ndarray:
    return np.round(np.maximum(np.expm1(log_values.astype(float)), 0.0), 2)


def decode_rows(rep: pd.DataFrame, kind: str) -> dict[str, np.ndarray]:
    """The copula's columns -> canonical values of transactions of one type."""
    amount = np.maximum(_money(rep["log_amount"].to_numpy()), 0.01)
    old_o = np.where(rep["orig_zero"] == "yes", 0.0, _money(rep["log_old_orig"].to_numpy()))
    mode = rep["orig_mode"].to_numpy()
    drain = (mode == "drain") & (old_o >= 0.01)
    amount = np.where(drain, old_o, amount)
    new_o = np.select(
        [mode == "credit", drain, mode == "other"],
        [old_o + amount, 0.0, _money(rep["log_new_orig"].to_numpy())],
        np.maximum(old_o - amount, 0.0),
    )
    dmode = rep["dest_mode"].to_numpy()
    untracked = dmode == "untracked"
    old_d = np.where(
        untracked | (rep["dest_zero"] == "yes"), 0.0, _money(rep["log_old_dest"].to_numpy())
    )
    new_d = np.select(
        [untracked, dmode == "credit", dmode == "other"],
        [0.0, old_d + amount, _money(rep["log_new_dest"].to_numpy())],
        np.maximum(old_d - amount, 0.0),
    )
    return {
        "hour": np.clip(np.round(rep["hour"].to_numpy(float)), 0, 23).astype(np.int64),
        "amount": amount,
        "old_balance_orig": old_o,
        "new_balance_orig": np.round(new_o, 2),
        "old_balance_dest": old_d,
        "new_balance_dest": np.round(new_d, 2),
        "is_unauthorized_overdraft": ((kind != "CASH_IN") & (amount > old_o)).astype(float),
    }
