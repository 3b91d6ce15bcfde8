"""Stage `reference`: the reference dataset the synthesizer learns from, split by time.

`reference.source: simulator` (default) runs the seeded PaySim-style simulator
(training/lib/simulator.py). Any other value is the path to a CSV with the public PaySim columns
(step, type, amount, nameOrig, oldbalanceOrg, newbalanceOrig, nameDest, oldbalanceDest,
newbalanceDest, isFraud, isFlaggedFraud), mapped to the canonical columns: user and
destination ids are the digits of nameOrig / nameDest, the timestamp is
start + step*3600 + a seeded second within the hour (PaySim has hourly steps only), and
isFlaggedFraud is dropped (it is the old rule engine's verdict, not a label), and
is_unauthorized_overdraft is 1.0 when an outgoing amount exceeds the origin's balance before
(as in the simulator; a CASH_IN is money coming in, never an overdraft). A CSV with
malformed rows is rejected as a whole, with a report naming line, column and problem: a
reference that silently lost rows would bias everything downstream. Rows with a zero
amount (PaySim has a few) are dropped with a warning, since serving rejects them.

The last `holdout_fraction` of the time span is the held-out test set, written separately:
the synthesizer never sees it, so evaluation on it is honest (train on synthetic, test on
reference)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fraudops.geoip import GeoIpDatabase
from fraudops.params import DEFAULT_PARAMS, load_params
from fraudops.pii import configure_logging
from fraudops.schema import MAX_AMOUNT, TRANSACTION_COLUMNS, TRANSACTION_TYPES
from training.lib.locations import add_locations
from training.lib.simulator import SimConfig, sequential_ids, simulate
from training.lib.split import split_by_time

log = logging.getLogger("training.reference")

PAYSIM_COLUMNS: tuple[str, ...] = (
    "step",
    "type",
    "amount",
    "nameOrig",
    "oldbalanceOrg",
    "newbalanceOrig",
    "nameDest",
    "oldbalanceDest",
    "newbalanceDest",
    "isFraud",
    "isFlaggedFraud",
)
PAYSIM_BALANCES = {
    "oldbalanceOrg": "old_balance_orig",
    "newbalanceOrig": "new_balance_orig",
    "oldbalanceDest": "old_balance_dest",
    "newbalanceDest": "new_balance_dest",
}
FIRST_DATA_LINE = 2  # line 1 of the file is the header


class MalformedInput(ValueError):
    """The input cannot be used as it is; the message is the full report for a human."""


def _issues(mask: pd.Series, column: str, kind: str, text: pd.Series, fmt: str) -> pd.DataFrame:
    """One problem row per offending line; `fmt` may quote the offending text as {value}."""
    rows = np.flatnonzero(mask.to_numpy())
    values = text.to_numpy()[rows]
    return pd.DataFrame(
        {
            "line": rows + FIRST_DATA_LINE,
            "column": column,
            "kind": kind,
            "problem": [fmt.format(value=str(v)[:40]) for v in values],
        }
    )


def _number_issues(text: pd.Series, column: str) -> tuple[pd.Series, list[pd.DataFrame]]:
    """Parse a numeric column; report missing, NaN, non-numeric and infinite values."""
    number = pd.to_numeric(text, errors="coerce")
    missing = text == ""
    nan_text = text.str.lower().isin(["nan", "-nan", "+nan"])
    infinite = pd.Series(np.isinf(number.to_numpy(dtype=float)), index=text.index)
    found = [
        _issues(missing, column, "missing value", text, "missing value"),
        _issues(nan_text, column, "NaN", text, "is NaN"),
        _issues(
            number.isna() & ~missing & ~nan_text,
            column,
            "not a number",
            text,
            "not a number: {value!r}",
        ),
        _issues(infinite, column, "infinite", text, "is infinite: {value!r}"),
    ]
    return number.where(~infinite), found


def _range_issues(number: pd.Series, text: pd.Series, column: str) -> list[pd.DataFrame]:
    """Column-specific rules on the values that did parse as finite numbers."""
    ok = number.notna()
    if column == "step":
        bad = ok & ((number < 0) | (number % 1 != 0))
        return [_issues(bad, column, "bad step", text, "must be a whole hour >= 0, got {value}")]
    if column in ("isFraud", "isFlaggedFraud"):
        bad = ok & ~number.isin([0, 1])
        return [_issues(bad, column, "bad label", text, "label must be 0 or 1, got {value}")]
    negative, huge = ok & (number < 0), ok & (number > MAX_AMOUNT)
    return [
        _issues(negative, column, "negative", text, "must not be negative, got {value}"),
        _issues(huge, column, "too large", text, "implausibly large: {value}"),
    ]


def _text_issues(raw: pd.DataFrame) -> list[pd.DataFrame]:
    """The type must be known; account names must end in an account number."""
    found = []
    kind_text = raw["type"]
    unknown = ~kind_text.isin(TRANSACTION_TYPES)
    expected = ", ".join(TRANSACTION_TYPES)
    found.append(
        _issues(
            unknown,
            "type",
            "unknown type",
            kind_text,
            "unknown type {value!r} (expected one of " + expected + ")",
        )
    )
    for column in ("nameOrig", "nameDest"):
        digits = raw[column].str.extract(r"^[A-Za-z]*(\d{1,18})$", expand=False)
        bad = digits.isna() | (pd.to_numeric(digits, errors="coerce") == 0)
        found.append(
            _issues(
                bad, column, "bad account", raw[column], "no positive account number in {value!r}"
            )
        )
    return found


def find_problems(raw: pd.DataFrame) -> pd.DataFrame:
    """Every problem in a PaySim frame read as text: line, column, kind, problem."""
    found = _text_issues(raw)
    for column in PAYSIM_COLUMNS:
        if column in ("type", "nameOrig", "nameDest"):
            continue
        number, issues = _number_issues(raw[column], column)
        found += issues + _range_issues(number, raw[column], column)
    problems = pd.concat(found, ignore_index=True)
    return problems.sort_values(["line", "column"], kind="stable", ignore_index=True)


def problem_report(path: Path, problems: pd.DataFrame, n_rows: int, max_shown: int) -> str:
    """A report a person can act on: the first problems in file order, then counts."""
    n_bad = problems["line"].nunique()
    lines = [
        f"{path}: {n_bad} of {n_rows} rows are malformed ({len(problems)} problems); "
        "nothing was written. Line numbers count the header as line 1.",
    ]
    for row in problems.head(max_shown).itertuples():
        lines.append(f"  line {row.line}, column {row.column}: {row.problem}")
    if len(problems) > max_shown:
        lines.append(f"  ... and {len(problems) - max_shown} more")
    lines.append("Problems by column:")
    counts = problems.groupby(["column", "kind"], sort=True).size()
    lines += [f"  {column}: {kind} x{count}" for (column, kind), count in counts.items()]
    return "\n".join(lines)


def _account_number(names: pd.Series) -> np.ndarray:
    return names.str.extract(r"(\d+)$", expand=False).astype(np.int64).to_numpy()


def _read_text(path: Path) -> pd.DataFrame:
    """The CSV as text cells (so every bad value can be reported, not coerced away)."""
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MalformedInput(f"{path}: not a readable CSV: {exc}") from exc
    missing = [c for c in PAYSIM_COLUMNS if c not in raw.columns]
    if missing:
        raise MalformedInput(
            f"{path}: missing columns {', '.join(missing)}; a PaySim CSV has the columns "
            f"{', '.join(PAYSIM_COLUMNS)} (found: {', '.join(map(str, raw.columns))})"
        )
    return pd.DataFrame({c: raw[c].fillna("").astype(str).str.strip() for c in PAYSIM_COLUMNS})


def map_paysim(raw: pd.DataFrame, start: int, seed: int) -> pd.DataFrame:
    """Canonical columns from validated PaySim text cells, sorted by timestamp."""
    rng = np.random.default_rng(seed)
    n = len(raw)
    amount = raw["amount"].astype(float).to_numpy()
    old_orig = raw["oldbalanceOrg"].astype(float).to_numpy()
    step = raw["step"].astype(float).to_numpy().astype(np.int64)
    frame = pd.DataFrame(
        {
            "transaction_id": sequential_ids("paysim-", n),
            "user_id": _account_number(raw["nameOrig"]),
            "timestamp": start + step * 3600 + rng.integers(0, 3600, n),
            "type": raw["type"].to_numpy(dtype=object),
            "amount": amount,
            **{canon: raw[col].astype(float).to_numpy() for col, canon in PAYSIM_BALANCES.items()},
            "is_unauthorized_overdraft": (
                (raw["type"].to_numpy() != "CASH_IN") & (amount > old_orig)
            ).astype(float),
            "dest_id": _account_number(raw["nameDest"]),
            "is_fraud": raw["isFraud"].astype(float).to_numpy().astype(np.int8),
        }
    )
    zero = frame["amount"] == 0
    if zero.any():
        log.warning("dropped %d rows with a zero amount (serving rejects them)", zero.sum())
    frame = frame.loc[~zero, list(TRANSACTION_COLUMNS)]
    return frame.sort_values("timestamp", kind="stable", ignore_index=True)


def read_paysim_csv(path: Path, start: int, seed: int, max_shown: int) -> pd.DataFrame:
    """A PaySim-style CSV as a canonical frame; MalformedInput (with the report) if any row
    is malformed."""
    raw = _read_text(path)
    problems = find_problems(raw)
    if len(problems):
        raise MalformedInput(problem_report(path, problems, len(raw), max_shown))
    return map_paysim(raw, start, seed)


def build_reference(params: dict, geoip_db: Path | None = None) -> pd.DataFrame:
    """The whole reference dataset, from the simulator or from a PaySim-style CSV. With
    `geoip_db`, simulated customers get home countries and addresses of real ranges
    (training.lib.locations); a CSV has no addresses: its location is unknown."""
    source = str(params["source"])
    if source == "simulator":
        cfg = SimConfig(
            n_users=int(params["n_users"]),
            n_steps=int(params["n_steps"]),
            start=int(params["start"]),
            tx_per_user_day=float(params["tx_per_user_day"]),
            ato_rate=float(params["ato_rate"]),
            card_testing_rate=float(params["card_testing_rate"]),
            seed=int(params["seed"]),
        )
        frame = simulate(cfg)
        if geoip_db is None:
            return frame
        rng = np.random.default_rng(int(params["seed"]))
        return add_locations(frame, GeoIpDatabase(geoip_db), rng)
    path = Path(source)
    if not path.is_file():
        raise MalformedInput(f"reference.source: no such file {path} (or use 'simulator')")
    return read_paysim_csv(
        path, int(params["start"]), int(params["seed"]), int(params["max_errors_shown"])
    )


def _describe(name: str, frame: pd.DataFrame) -> str:
    return (
        f"{name}: {len(frame)} rows, fraud rate {frame['is_fraud'].mean():.4%}, "
        f"timestamps {frame['timestamp'].min()}..{frame['timestamp'].max()}"
    )


def run_reference(
    params: dict, out_train: Path, out_holdout: Path, geoip_db: Path | None = None
) -> tuple[int, int]:
    """Build, split by time and write both parquet files; returns their row counts."""
    fraction = float(params["holdout_fraction"])
    frame = build_reference(params, geoip_db)
    train, holdout = split_by_time(frame, fraction, "reference.holdout_fraction")
    for path, frame in ((out_train, train), (out_holdout, holdout)):
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)
        log.info("%s", _describe(str(path), frame))
    return len(train), len(holdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    parser.add_argument("--out-train", type=Path, required=True)
    parser.add_argument("--out-holdout", type=Path, required=True)
    parser.add_argument("--geoip-db", type=Path, help="IP country database (make geoip-db)")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        params = load_params(args.params, "reference")
        run_reference(params, args.out_train, args.out_holdout, args.geoip_db)
    except (MalformedInput, ValueError) as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
