"""The vectorised micro-batch validator (validate_columns) judges every transaction as
validate_transaction does: the same rows fail, naming the same field with the same message."""

from __future__ import annotations

import math

import pytest

from fraudops.schema import InvalidTransaction, validate_columns, validate_transaction


def good(i: int = 0, **fields) -> dict:
    tx = {
        "transaction_id": f"tx-{i}",
        "user_id": 1 + i,
        "timestamp": 1_700_000_000 + i,
        "type": "TRANSFER",
        "amount": 100.5 + i,
        "old_balance_orig": 1000,
        "new_balance_orig": 899.5,
        "old_balance_dest": 0.0,
        "new_balance_dest": 100.5,
        "is_unauthorized_overdraft": 0.0,
        "dest_id": 7,
        "channel": "web",
        "is_fraud": 0,
    }
    return {**tx, **fields}


CASES = {
    "good": {},
    "good_int_amount": {"amount": 5},
    "good_max_amount": {"amount": 1e12},
    "good_long_id": {"transaction_id": "x" * 64},
    "good_channel_not_a_string": {"channel": None},
    "id_empty": {"transaction_id": ""},
    "id_blank": {"transaction_id": " \t"},
    "id_not_str": {"transaction_id": 12},
    "id_too_long": {"transaction_id": "x" * 65},
    "user_zero": {"user_id": 0},
    "user_bool": {"user_id": True},
    "user_float": {"user_id": 3.0},
    "user_missing": {"user_id": None},
    "timestamp_negative": {"timestamp": -5},
    "timestamp_str": {"timestamp": "1700000000"},
    "type_unknown": {"type": "WIRE"},
    "type_lowercase": {"type": "transfer"},
    "type_not_str": {"type": 3},
    "amount_zero": {"amount": 0.0},
    "amount_negative": {"amount": -1.0},
    "amount_nan": {"amount": math.nan},
    "amount_inf": {"amount": math.inf},
    "amount_huge": {"amount": 1e12 + 1},
    "amount_huge_int": {"amount": 10**13},
    "amount_bool": {"amount": True},
    "balance_str": {"old_balance_dest": "12"},
    "balance_negative_inf": {"new_balance_orig": -math.inf},
    "overdraft_negative": {"is_unauthorized_overdraft": -0.5},
    "two_faults_first_named": {"user_id": -1, "amount": -1.0},
    "channel_too_long": {"channel": "c" * 65},
}


def _error(tx: dict) -> tuple[str, str] | None:
    try:
        validate_transaction(tx)
    except InvalidTransaction as err:
        return err.field, str(err)
    return None


def _columns(txs: list[dict]) -> dict[str, list]:
    return {k: [tx[k] for tx in txs] for k in txs[0]}


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_row_agrees_with_validate_transaction(case):
    tx = good(**CASES[case])
    got = {i: (err.field, str(err)) for i, err in validate_columns(_columns([tx]))}
    assert got.get(0) == _error(tx)
    assert (got.get(0) is None) == case.startswith("good")


def test_a_mixed_batch_reports_each_bad_row_by_index():
    txs = [good(i, **CASES[case]) for i, case in enumerate(sorted(CASES))]
    expected = {i: e for i, tx in enumerate(txs) if (e := _error(tx)) is not None}
    got = {i: (err.field, str(err)) for i, err in validate_columns(_columns(txs))}
    assert got == expected
    assert len(expected) == sum(not c.startswith("good") for c in CASES)


def test_a_missing_column_fails_every_row():
    cols = _columns([good(0), good(1)])
    del cols["amount"]
    assert [(i, e.field) for i, e in validate_columns(cols)] == [(0, "amount"), (1, "amount")]


def test_an_empty_batch_has_no_errors():
    assert validate_columns({k: [] for k in good()}) == []
