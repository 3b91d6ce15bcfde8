"""The reference stage: the simulator's determinism and fraud patterns, the PaySim CSV import
(mapping and the malformed-row report) and the time split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fraudops.schema import TRANSACTION_COLUMNS, TRANSACTION_TYPES
from training import reference
from training.lib.simulator import SimConfig, simulate
from training.lib.split import split_by_time
from training.reference import MalformedInput, read_paysim_csv

FIXTURE = Path(__file__).parents[1] / "fixtures" / "paysim_small.csv"
START = 1_704_067_200
# Small population, high fraud rates: every pattern shows up in a fraction of a second.
# As the reference section of params.yaml names them (the CLI tests write it).
SMALL_PARAMS = {
    "n_users": 1500,
    "n_steps": 96,
    "start": START,
    "tx_per_user_day": 2.0,
    "ato_rate": 0.004,
    "card_testing_rate": 0.004,
    "seed": 7,
}
SMALL = SimConfig(**SMALL_PARAMS)


@pytest.fixture(scope="module")
def sim() -> pd.DataFrame:
    return simulate(SMALL)


def test_simulator_is_deterministic(sim):
    pd.testing.assert_frame_equal(sim, simulate(SMALL))
    other = simulate(SimConfig(**{**SMALL.__dict__, "seed": 8}))
    assert not other["amount"].equals(sim["amount"])


def test_simulator_meets_the_data_contract(sim):
    assert tuple(sim.columns) == TRANSACTION_COLUMNS
    assert sim["transaction_id"].is_unique
    assert sim["timestamp"].is_monotonic_increasing
    assert (sim["user_id"] > 0).all() and (sim["dest_id"] > 0).all()
    assert sim["user_id"].dtype == np.int64 and sim["dest_id"].dtype == np.int64
    assert set(sim["type"]) <= set(TRANSACTION_TYPES)
    assert (sim["amount"] > 0).all()
    balances = sim[["old_balance_orig", "new_balance_orig", "old_balance_dest", "new_balance_dest"]]
    assert (balances >= 0).all().all()
    assert set(sim["is_fraud"]) == {0, 1} and sim["is_fraud"].dtype == np.int8
    overdraft = (sim["type"] != "CASH_IN") & (sim["amount"] > sim["old_balance_orig"])
    assert (sim["is_unauthorized_overdraft"] == overdraft.astype(float)).all()
    assert sim["timestamp"].min() >= START


def test_account_takeover_drains_to_a_mule_who_cashes_out_minutes_later(sim):
    fraud = sim[sim["is_fraud"] == 1]
    transfers = fraud[fraud["type"] == "TRANSFER"]
    assert len(transfers) >= 5
    assert (transfers["amount"] == transfers["old_balance_orig"]).all()
    assert (transfers["new_balance_orig"] == 0).all()
    cash_outs = fraud[fraud["type"] == "CASH_OUT"]
    for tx in transfers.itertuples():
        after = cash_outs[
            (cash_outs["user_id"] == tx.dest_id)
            & (cash_outs["timestamp"] > tx.timestamp)
            & (cash_outs["timestamp"] <= tx.timestamp + 1800)
            & (cash_outs["amount"] == tx.amount)
        ]
        assert len(after) >= 1, f"no mule cash-out after takeover {tx.transaction_id}"


def test_card_testing_is_small_probes_then_a_larger_purchase(sim):
    cards = sim[(sim["is_fraud"] == 1) & sim["type"].isin(["PAYMENT", "DEBIT"])]
    episodes = 0
    for _, rows in cards.groupby("user_id"):
        rows = rows.sort_values("timestamp", kind="stable")
        if rows["timestamp"].iloc[-1] - rows["timestamp"].iloc[0] > 3600:
            continue  # the same user carded twice: rare, and not this test's point
        episodes += 1
        assert len(rows) >= 4
        assert rows["timestamp"].iloc[-1] - rows["timestamp"].iloc[0] <= 9 * 120
        assert (rows["amount"].iloc[:-1] <= 5).all()
        assert rows["amount"].iloc[-1] > rows["amount"].iloc[:-1].max()
    assert episodes >= 5


def test_legit_traffic_has_the_fraud_look_alikes(sim):
    legit = sim[sim["is_fraud"] == 0]
    drained = (legit["old_balance_orig"] > 0) & (legit["new_balance_orig"] == 0)
    assert (drained & (legit["type"] == "TRANSFER")).sum() > 0, "no legit drains"
    assert (legit["type"] == "CASH_OUT").sum() > 0
    payments = legit[legit["type"].isin(["PAYMENT", "DEBIT"])].sort_values(
        ["user_id", "timestamp"], kind="stable"
    )
    gap = payments.groupby("user_id")["timestamp"].diff()
    assert (gap <= 600).sum() > 0, "no legit bursts of payments"


def test_paysim_csv_is_mapped_to_canonical_columns():
    frame = read_paysim_csv(FIXTURE, START, seed=1, max_shown=5)
    assert tuple(frame.columns) == TRANSACTION_COLUMNS
    assert len(frame) == 11  # the zero-amount row is dropped
    first = frame.set_index("user_id").loc[1231006815]
    assert first["dest_id"] == 1979787155
    assert first["type"] == "PAYMENT" and first["amount"] == pytest.approx(9839.64)
    assert first["old_balance_orig"] == pytest.approx(170136.0)
    assert first["new_balance_orig"] == pytest.approx(160296.36)
    assert START + 3600 <= first["timestamp"] < START + 7200  # step 1
    assert frame["is_fraud"].sum() == 4
    overdraft = frame.set_index("user_id").loc[905080434, "is_unauthorized_overdraft"]
    assert overdraft == 1.0  # cash-out of 229133.94 from a balance of 15325
    assert frame["timestamp"].is_monotonic_increasing
    assert frame["transaction_id"].is_unique


def _corrupt(tmp_path: Path, line: int, column: str, value: str) -> Path:
    """The fixture with one cell replaced (line numbers count the header as line 1)."""
    raw = pd.read_csv(FIXTURE, dtype=str)
    raw.loc[line - 2, column] = value
    path = tmp_path / "bad.csv"
    raw.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("line", "column", "value", "problem"),
    [
        (3, "amount", "-12.5", "must not be negative"),
        (4, "amount", "abc", "not a number"),
        (5, "amount", "NaN", "is NaN"),
        (6, "amount", "", "missing value"),
        (7, "type", "WIRE", "unknown type 'WIRE'"),
        (8, "isFraud", "2", "label must be 0 or 1"),
        (9, "oldbalanceOrg", "-1", "must not be negative"),
        (10, "nameOrig", "nobody", "no positive account number"),
        (11, "step", "1.5", "must be a whole hour"),
    ],
)
def test_malformed_rows_are_reported_by_line_and_column(tmp_path, line, column, value, problem):
    path = _corrupt(tmp_path, line, column, value)
    with pytest.raises(MalformedInput) as err:
        read_paysim_csv(path, START, seed=1, max_shown=5)
    message = str(err.value)
    assert f"line {line}, column {column}: {problem}" in message
    assert "1 of 12 rows are malformed" in message


def test_missing_columns_are_named(tmp_path):
    path = tmp_path / "short.csv"
    pd.read_csv(FIXTURE).drop(columns=["oldbalanceDest", "isFraud"]).to_csv(path, index=False)
    with pytest.raises(MalformedInput, match="missing columns oldbalanceDest, isFraud"):
        read_paysim_csv(path, START, seed=1, max_shown=5)


def test_report_shows_the_first_problems_and_counts_them_all(tmp_path):
    raw = pd.read_csv(FIXTURE, dtype=str)
    raw["type"] = "WIRE"
    path = tmp_path / "bad.csv"
    raw.to_csv(path, index=False)
    with pytest.raises(MalformedInput) as err:
        read_paysim_csv(path, START, seed=1, max_shown=3)
    message = str(err.value)
    assert "line 4, column type" in message and "line 5, column type" not in message
    assert "... and 9 more" in message
    assert "type: unknown type x12" in message


def test_time_split_holds_out_the_last_fraction(sim):
    train, holdout = split_by_time(sim, 0.25, "reference.holdout_fraction")
    assert len(train) + len(holdout) == len(sim)
    assert train["timestamp"].max() < holdout["timestamp"].min()
    span = sim["timestamp"].max() - sim["timestamp"].min()
    held_span = holdout["timestamp"].max() - holdout["timestamp"].min()
    assert held_span == pytest.approx(0.25 * span, rel=0.05)
    with pytest.raises(ValueError, match="holdout_fraction"):
        split_by_time(sim, 1.0, "reference.holdout_fraction")


def _params_file(tmp_path: Path, **section) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"reference": section}))
    return path


def test_cli_writes_train_and_holdout(tmp_path):
    smaller = {"n_users": 300, "n_steps": 48, "ato_rate": 0.01, "card_testing_rate": 0.01}
    params = _params_file(tmp_path, source="simulator", holdout_fraction=0.2, max_errors_shown=5,
                          **{**SMALL_PARAMS, **smaller, "seed": 3})  # fmt: skip
    train, holdout = tmp_path / "ref" / "train.parquet", tmp_path / "ref" / "holdout.parquet"
    argv = ["--params", str(params), "--out-train", str(train), "--out-holdout", str(holdout)]
    assert reference.main(argv) == 0
    a, b = pd.read_parquet(train), pd.read_parquet(holdout)
    assert tuple(a.columns) == TRANSACTION_COLUMNS == tuple(b.columns)
    assert a["timestamp"].max() < b["timestamp"].min()


def test_cli_rejects_a_malformed_csv_and_writes_nothing(tmp_path, caplog):
    bad = _corrupt(tmp_path, 4, "amount", "-3")
    params = _params_file(
        tmp_path, source=str(bad), seed=1, start=START, holdout_fraction=0.2, max_errors_shown=5
    )
    out = tmp_path / "out"
    argv = [
        "--params",
        str(params),
        "--out-train",
        str(out / "t.parquet"),
        "--out-holdout",
        str(out / "h.parquet"),
    ]
    assert reference.main(argv) == 1
    assert not out.exists()


def test_cash_agents_balances_keep_their_level_over_the_time_line():
    """The held-out days must look like the training days: cash agents' floats are
    restocked daily, so destination balances of cash rows do not drain over the weeks."""
    cfg = SimConfig(**{**SMALL.__dict__, "n_users": 1000, "n_steps": 24 * 14})
    frame = simulate(cfg)
    cash = frame[frame["type"].isin(["CASH_IN", "CASH_OUT"])]
    day = (cash["timestamp"] - START) // 86_400
    level = np.log1p(cash["old_balance_dest"]).groupby(day).median()
    assert abs(level.iloc[-1] - level.iloc[0]) < 0.3, level.round(2).to_dict()


def test_customers_balances_keep_their_level_over_the_time_line():
    """Income matches what leaves the customers (transfers stay among them), so payers'
    balances neither drain nor grow from the training days to the held-out days."""
    cfg = SimConfig(**{**SMALL.__dict__, "n_users": 1000, "n_steps": 24 * 14})
    frame = simulate(cfg)
    legit = frame[frame["is_fraud"] == 0]
    day = (legit["timestamp"] - START) // 86_400
    level = np.log1p(legit["old_balance_orig"]).groupby(day).median()
    assert abs(level.iloc[-1] - level.iloc[0]) < 0.3, level.round(2).to_dict()
