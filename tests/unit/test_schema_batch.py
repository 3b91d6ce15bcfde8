"""The vectorised micro-batch validator (validate_columns) judges every transaction as
validate_transaction does: the same rows fail, naming the same field with the same message."""

from __future__ import annotations

import math
import time

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
        "ip_address": "",
        "card_country": "",
        "billing_country": "",
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
    "good_unicode_channel": {"channel": "caf\u00e9 \u9280\u884c \U0001f4b3"},
    "good_unicode_id": {"transaction_id": "tx-\u00e9\u9280"},
    "good_max_user": {"user_id": 2**63 - 1},
    "good_earliest_timestamp": {"timestamp": 946_684_800},
    "good_simulator_start": {"timestamp": 1_704_067_200},
    "id_nul": {"transaction_id": "a\x00b"},
    "id_newline": {"transaction_id": "tx-1\n"},
    "id_tab": {"transaction_id": "tx\t1"},
    "id_zero_width": {"transaction_id": "tx\u200b1"},
    "id_surrogate": {"transaction_id": "tx\ud800"},
    "channel_nul": {"channel": "a\x00b"},
    "channel_escape": {"channel": "web\x1b[31m"},
    "channel_c1": {"channel": "web\x85"},
    "channel_del": {"channel": "web\x7f"},
    "channel_surrogate": {"channel": "web\udfff"},
    "user_beyond_int64": {"user_id": 2**63},
    "timestamp_int64_max": {"timestamp": 2**63 - 1},
    "timestamp_before_2000": {"timestamp": 946_684_799},
    "timestamp_next_year": {"timestamp": int(time.time()) + 366 * 86400},
    "amount_beyond_float": {"amount": 10**400},
    "amount_beyond_float_negative": {"amount": -(10**400)},
    "balance_beyond_float": {"new_balance_dest": 10**309},
    "good_ipv4": {"ip_address": "81.2.69.160", "card_country": "GB", "billing_country": "GB"},
    "good_ipv6": {"ip_address": "2a00:1450:4001::1", "card_country": "XK"},
    "good_private_ip": {"ip_address": "192.168.1.1"},
    "ip_octet_out_of_range": {"ip_address": "999.1.1.1"},
    "ip_three_octets": {"ip_address": "1.2.3"},
    "ip_leading_zero": {"ip_address": "01.2.3.4"},
    "ip_zone_index": {"ip_address": "fe80::1%eth0"},
    "ip_prefix": {"ip_address": "10.0.0.0/8"},
    "ip_padded": {"ip_address": " 8.8.8.8"},
    "ip_fullwidth_digits": {"ip_address": "\uff18.\uff18.\uff18.\uff18"},
    "ip_too_long": {"ip_address": "1" * 500},
    "ip_not_str": {"ip_address": 134744072},
    "card_country_lowercase": {"card_country": "de"},
    "card_country_not_a_code": {"card_country": "ZZ"},
    "card_country_alpha3": {"card_country": "DEU"},
    "billing_country_not_str": {"billing_country": 49},
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


def test_an_amount_beyond_float_range_is_invalid_not_an_overflow():
    with pytest.raises(InvalidTransaction) as err:
        validate_transaction(good(amount=10**400))
    assert err.value.field == "amount"


def test_the_timestamp_window_is_configurable():
    from fraudops.schema import TimestampWindow

    now = 1_800_000_000
    narrow = TimestampWindow(earliest=1_700_000_000, max_ahead_s=60)
    validate_transaction(good(timestamp=now + 60), narrow, now=now)
    for ts in (1_699_999_999, now + 61):
        with pytest.raises(InvalidTransaction, match="^timestamp: "):
            validate_transaction(good(timestamp=ts), narrow, now=now)
    clock = int(time.time())  # validate_columns reads the clock itself
    txs = [good(0, timestamp=clock + 3600), good(1, timestamp=clock), good(2, timestamp=1)]
    got = [(i, e.field) for i, e in validate_columns(_columns(txs), narrow)]
    assert got == [(0, "timestamp"), (2, "timestamp")]


def test_a_malformed_ip_address_is_named_but_never_repeated():
    error = _error(good(ip_address="203.0.113.999"))
    assert error is not None and error[0] == "ip_address"
    assert "203.0.113" not in error[1]  # an address is personal data: not in a message
