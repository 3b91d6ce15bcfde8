"""The transaction schema: one list of fields, their types and the rules a transaction must
meet, shared by the simulator, the expectation suites, the feature transform and the
gRPC/Kafka validation in serving."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

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

MAX_ID_LENGTH = 64
MAX_TEXT_LENGTH = 64
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
