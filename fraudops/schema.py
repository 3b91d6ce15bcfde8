"""The transaction schema: one list of fields, their types and the rules a transaction must
meet, shared by the simulator, the expectation suites, the feature transform and the
gRPC/Kafka validation in serving."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

TRANSACTION_TYPES: tuple[str, ...] = ("CASH_IN", "CASH_OUT", "DEBIT", "PAYMENT", "TRANSFER")

# Canonical column names (they match the proto's TransactionRequest fields).
ID_COLUMN = "transaction_id"
USER_COLUMN = "user_id"
TIME_COLUMN = "timestamp"
LABEL_COLUMN = "is_fraud"
TYPE_COLUMN = "type"
NUMERIC_COLUMNS: tuple[str, ...] = (
    "amount",
    "old_balance_orig",
    "new_balance_orig",
    "old_balance_dest",
    "new_balance_dest",
    "is_unauthorized_overdraft",
)
BALANCE_COLUMNS: tuple[str, ...] = NUMERIC_COLUMNS[1:5]
# Every dataset in data/ (reference, raw, feedback) carries exactly these columns.
TRANSACTION_COLUMNS: tuple[str, ...] = (
    ID_COLUMN,
    USER_COLUMN,
    TIME_COLUMN,
    TYPE_COLUMN,
    *NUMERIC_COLUMNS,
    "dest_id",
    LABEL_COLUMN,
)

# The fields validate_transaction reads (validate_columns wants these columns).
VALIDATED_COLUMNS: tuple[str, ...] = (
    ID_COLUMN,
    USER_COLUMN,
    TIME_COLUMN,
    TYPE_COLUMN,
    *NUMERIC_COLUMNS,
    "channel",
)

MAX_ID_LENGTH = 64
MAX_TEXT_LENGTH = 64
_KNOWN_TYPES = frozenset(TRANSACTION_TYPES)
MAX_AMOUNT = 1e12  # nothing real is larger; beyond this float32 features lose meaning


class InvalidTransaction(ValueError):
    """A transaction broke a schema rule. `field` names the offending field."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def _check_number(name: str, value: Any, *, non_negative: bool = True) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidTransaction(name, f"must be a number, got {type(value).__name__}")
    if math.isnan(value):
        raise InvalidTransaction(name, "is NaN")
    if math.isinf(value):
        raise InvalidTransaction(name, "is infinite")
    if non_negative and value < 0:
        raise InvalidTransaction(name, f"must not be negative, got {value}")
    if abs(value) > MAX_AMOUNT:
        raise InvalidTransaction(name, f"is implausibly large ({value:g})")


def validate_transaction(tx: Mapping[str, Any]) -> None:
    """Raise InvalidTransaction naming the first field that breaks the schema.

    Works on a dict or on anything with the proto's field names (see `as_dict`)."""
    tx_id = tx.get(ID_COLUMN, "")
    if not isinstance(tx_id, str) or not tx_id.strip():
        raise InvalidTransaction(ID_COLUMN, "must be a non-empty string")
    if len(tx_id) > MAX_ID_LENGTH:
        raise InvalidTransaction(ID_COLUMN, f"longer than {MAX_ID_LENGTH} characters")
    user_id = tx.get(USER_COLUMN)
    if not isinstance(user_id, int) or isinstance(user_id, bool) or user_id <= 0:
        raise InvalidTransaction(USER_COLUMN, "must be a positive integer")
    timestamp = tx.get(TIME_COLUMN)
    if not isinstance(timestamp, int) or isinstance(timestamp, bool) or timestamp <= 0:
        raise InvalidTransaction(TIME_COLUMN, "must be positive Unix epoch seconds")
    tx_type = tx.get(TYPE_COLUMN)
    if tx_type not in TRANSACTION_TYPES:
        shown = str(tx_type)[:MAX_TEXT_LENGTH]
        raise InvalidTransaction(
            TYPE_COLUMN, f"unknown type {shown!r}; expected one of {', '.join(TRANSACTION_TYPES)}"
        )
    for name in NUMERIC_COLUMNS:
        _check_number(name, tx.get(name), non_negative=True)
    if tx[NUMERIC_COLUMNS[0]] == 0:
        raise InvalidTransaction("amount", "must be greater than zero")
    channel = tx.get("channel", "")
    if isinstance(channel, str) and len(channel) > MAX_TEXT_LENGTH:
        raise InvalidTransaction("channel", f"longer than {MAX_TEXT_LENGTH} characters")


def proto_to_dict(msg: Any) -> dict[str, Any]:
    """The fields of a TransactionRequest as a plain dict with canonical names."""
    return {
        ID_COLUMN: msg.transaction_id,
        USER_COLUMN: msg.user_id,
        TIME_COLUMN: msg.timestamp,
        TYPE_COLUMN: msg.type,
        "amount": msg.amount,
        "old_balance_orig": msg.old_balance_orig,
        "new_balance_orig": msg.new_balance_orig,
        "old_balance_dest": msg.old_balance_dest,
        "new_balance_dest": msg.new_balance_dest,
        "is_unauthorized_overdraft": msg.is_unauthorized_overdraft,
        "dest_id": msg.dest_id,
        "channel": msg.channel,
        LABEL_COLUMN: msg.is_fraud,
    }


def _of_types(column: Sequence[Any], types: tuple[type, ...]) -> np.ndarray:
    """Per row: is the value's exact type one of `types` (bool is not an int here)."""
    if set(map(type, column)) <= set(types):
        return np.ones(len(column), dtype=bool)
    return np.fromiter((type(v) in types for v in column), dtype=bool, count=len(column))


def _numbers(column: Sequence[Any], types: tuple[type, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The column as float64 (0 where the type is wrong) and where the type is wrong."""
    ok = _of_types(column, types)
    values = column if ok.all() else [v if good else 0 for v, good in zip(column, ok, strict=True)]
    try:
        with np.errstate(over="ignore"):
            return np.asarray(values, dtype=np.float64), ~ok
    except OverflowError:  # an int beyond float range: let the exact check judge every row
        return np.zeros(len(column)), np.ones(len(column), dtype=bool)


def _bad_ids(ids: Sequence[Any]) -> np.ndarray:
    """Per row: the transaction id is not a string, blank, or too long."""
    ok = _of_types(ids, (str,))
    strings = ids if ok.all() else [v if good else "" for v, good in zip(ids, ok, strict=True)]
    lengths = np.fromiter(map(len, strings), dtype=np.int64, count=len(ids))
    blank = np.fromiter(map(str.isspace, strings), dtype=bool, count=len(ids))
    return ~ok | (lengths == 0) | (lengths > MAX_ID_LENGTH) | blank


def _known_types(types: Sequence[Any]) -> np.ndarray:
    """Per row: the type is one of TRANSACTION_TYPES (a non-string never is)."""
    ok = _of_types(types, (str,))
    strings = types if ok.all() else [v if good else "" for v, good in zip(types, ok, strict=True)]
    return ok & np.fromiter(map(_KNOWN_TYPES.__contains__, strings), bool, len(types))


def _long_channels(channel: Sequence[Any]) -> np.ndarray:
    """Per row: the channel is a string longer than MAX_TEXT_LENGTH."""
    if _of_types(channel, (str,)).all():
        return np.fromiter(map(len, channel), np.int64, len(channel)) > MAX_TEXT_LENGTH
    long = (isinstance(c, str) and len(c) > MAX_TEXT_LENGTH for c in channel)
    return np.fromiter(long, bool, len(channel))


def _suspects(cols: Mapping[str, Sequence[Any]], n: int) -> np.ndarray:
    """Rows that may break a rule of validate_transaction: never misses one, and flags a
    valid row only in corner cases (an int too large for float64)."""
    missing = [None] * n
    bad = _bad_ids(cols.get(ID_COLUMN, missing))
    for name in (USER_COLUMN, TIME_COLUMN):
        values, wrong = _numbers(cols.get(name, missing), (int,))
        bad |= wrong | ~(values > 0)
    bad |= ~_known_types(cols.get(TYPE_COLUMN, missing))
    for name in NUMERIC_COLUMNS:
        values, wrong = _numbers(cols.get(name, missing), (int, float))
        with np.errstate(invalid="ignore"):
            bad |= wrong | ~(np.abs(values) < MAX_AMOUNT) | (values < 0)
        if name == "amount":
            bad |= values == 0
    channel = cols.get("channel")
    if channel is not None:
        bad |= _long_channels(channel)
    return bad


def validate_columns(cols: Mapping[str, Sequence[Any]]) -> list[tuple[int, InvalidTransaction]]:
    """Validate a micro-batch given as columns (name -> values, one per row): for each
    row that breaks the schema, its index and the error validate_transaction raises.

    The rules run vectorised to find the few suspect rows; each suspect row is then
    judged by validate_transaction itself, so the field and message are the same by
    construction and a rule lives in one place."""
    n = len(cols[ID_COLUMN]) if ID_COLUMN in cols else len(next(iter(cols.values()), ()))
    errors: list[tuple[int, InvalidTransaction]] = []
    for i in np.flatnonzero(_suspects(cols, n)).tolist():
        try:
            validate_transaction({k: v[i] for k, v in cols.items()})
        except InvalidTransaction as err:
            errors.append((i, err))
    return errors
