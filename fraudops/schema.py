"""The transaction schema: one list of fields, their types and the rules a transaction must
meet, shared by the simulator, the expectation suites, the feature transform and the
gRPC/Kafka validation in serving."""

from __future__ import annotations

import functools
import math
import re
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fraudops.countries import COUNTRY_CODES
from fraudops.settings import Settings

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

# A Stripe payment's own ids, kept beside the transaction (empty for other sources).
STRIPE_ID_COLUMNS: tuple[str, ...] = (
    "stripe_payment_intent_id",
    "stripe_charge_id",
    "stripe_customer_id",
)

# Where a payment comes from and where its card belongs (empty = unknown). The IP address is
# personal data: it is read to enrich, never stored (see fraudops.geoip).
IP_COLUMN = "ip_address"
COUNTRY_COLUMNS: tuple[str, ...] = ("card_country", "billing_country")
LOCATION_COLUMNS: tuple[str, ...] = (IP_COLUMN, *COUNTRY_COLUMNS)
# What a dataset may carry of location (never the address: what enrichment derives from it,
# and the card's country), between dest_id and the label; a dataset without them (a PaySim
# CSV) has every location unknown.
LOCATION_DATA_COLUMNS: tuple[str, ...] = ("ip_country", "ip_kind", "card_country")

# The fields validate_transaction reads (validate_columns wants these columns).
VALIDATED_COLUMNS: tuple[str, ...] = (
    ID_COLUMN,
    USER_COLUMN,
    TIME_COLUMN,
    TYPE_COLUMN,
    *NUMERIC_COLUMNS,
    "channel",
    "balances_missing",
    *STRIPE_ID_COLUMNS,
    *LOCATION_COLUMNS,
)

MAX_ID_LENGTH = 64
MAX_TEXT_LENGTH = 64
MAX_IP_LENGTH = 45  # the longest IPv6 text form (an IPv4-mapped address in full)
_KNOWN_TYPES = frozenset(TRANSACTION_TYPES)
MAX_AMOUNT = 1e12  # nothing real is larger; beyond this float32 features lose meaning
MAX_INT64 = 2**63 - 1  # user_id and timestamp are BIGINT in Postgres, int64 on the wire
# C0 and C1 control characters (NUL included) and lone surrogates: Postgres refuses NUL, a
# surrogate has no UTF-8 encoding, and the others corrupt logs, CSV exports and the console.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass(frozen=True)
class TimestampWindow:
    """The event times a transaction may carry: none before `earliest`, none more than
    `max_ahead_s` past the validating process's clock (clocks drift a little; simulated
    and replayed traffic lies in the past, so there is no lower bound relative to now)."""

    earliest: int
    max_ahead_s: int

    @classmethod
    def from_settings(cls, settings: Settings) -> TimestampWindow:
        return cls(settings.min_event_ts, settings.max_event_ts_ahead_s)

    def latest(self, now: float | None = None) -> int:
        return int(time.time() if now is None else now) + self.max_ahead_s


DEFAULT_WINDOW = TimestampWindow.from_settings(Settings())


class FieldError(ValueError):
    """Input that broke a rule: `field` names the offending field and `problem` says how,
    so every door can answer with both (INVALID_ARGUMENT, 422, a DLQ reason)."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class InvalidTransaction(FieldError):
    """A transaction broke a schema rule."""


def text_problem(value: str, max_length: int, *, printable: bool = False) -> str | None:
    """What makes a string field unfit to store, or None: too long, or a character that is
    a control character or not UTF-8 (for identifiers: anything not printable)."""
    if len(value) > max_length:
        return f"longer than {max_length} characters"
    if printable:
        bad = next((i for i, c in enumerate(value) if not c.isprintable()), None)
    else:
        found = _CONTROL.search(value)
        bad = found.start() if found else None
    if bad is None:
        return None
    what = "printable characters" if printable else "no control characters and valid UTF-8"
    return f"must hold {what}; U+{ord(value[bad]):04X} at position {bad}"


def _check_number(name: str, value: Any, *, non_negative: bool = True) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidTransaction(name, f"must be a number, got {type(value).__name__}")
    if isinstance(value, int):  # may be beyond float range: compare exactly, never convert
        if non_negative and value < 0:
            shown = value if value >= -MAX_AMOUNT else f"less than {-MAX_AMOUNT:g}"
            raise InvalidTransaction(name, f"must not be negative, got {shown}")
        if abs(value) > MAX_AMOUNT:
            raise InvalidTransaction(name, f"is implausibly large (more than {MAX_AMOUNT:g})")
        return
    if math.isnan(value):
        raise InvalidTransaction(name, "is NaN")
    if math.isinf(value):
        raise InvalidTransaction(name, "is infinite")
    if non_negative and value < 0:
        raise InvalidTransaction(name, f"must not be negative, got {value}")
    if abs(value) > MAX_AMOUNT:
        raise InvalidTransaction(name, f"is implausibly large ({value:g})")


def validate_transaction(
    tx: Mapping[str, Any], window: TimestampWindow = DEFAULT_WINDOW, now: float | None = None
) -> None:
    """Raise InvalidTransaction naming the first field that breaks the schema.

    Works on a dict or on anything with the proto's field names (see `proto_to_dict`). `now`
    (Unix seconds, default the clock) is where the timestamp window ends."""
    tx_id = tx.get(ID_COLUMN, "")
    if not isinstance(tx_id, str) or not tx_id.strip():
        raise InvalidTransaction(ID_COLUMN, "must be a non-empty string")
    if problem := text_problem(tx_id, MAX_ID_LENGTH, printable=True):
        raise InvalidTransaction(ID_COLUMN, problem)
    user_id = tx.get(USER_COLUMN)
    if not _is_int(user_id) or not 0 < user_id <= MAX_INT64:
        raise InvalidTransaction(USER_COLUMN, "must be a positive 64-bit integer")
    _check_timestamp(tx.get(TIME_COLUMN), window, now)
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
    if isinstance(channel, str) and (problem := text_problem(channel, MAX_TEXT_LENGTH)):
        raise InvalidTransaction("channel", problem)
    if not isinstance(tx.get("balances_missing", False), bool):
        raise InvalidTransaction("balances_missing", "must be true or false")
    for name in STRIPE_ID_COLUMNS:
        value = tx.get(name, "")
        if not isinstance(value, str):
            raise InvalidTransaction(name, "must be a string")
        if problem := text_problem(value, MAX_ID_LENGTH, printable=True):
            raise InvalidTransaction(name, problem)
    _check_location(tx)


def _check_location(tx: Mapping[str, Any]) -> None:
    """The IP address parses as IPv4 or IPv6 and each country is an ISO 3166-1 alpha-2
    code; empty (or absent: an older producer) is unknown, which is valid. The message
    never repeats a malformed value: it may be a real address, which is personal data."""
    ip = tx.get(IP_COLUMN, "")
    if not isinstance(ip, str):
        raise InvalidTransaction(IP_COLUMN, "must be a string")
    if ip and parse_ip(ip) is None:
        raise InvalidTransaction(IP_COLUMN, "must be an IPv4 or IPv6 address (or empty)")
    for name in COUNTRY_COLUMNS:
        value = tx.get(name, "")
        if not isinstance(value, str) or (value and value not in COUNTRY_CODES):
            raise InvalidTransaction(
                name, "must be an ISO 3166-1 alpha-2 country code in capitals, or empty"
            )


@functools.lru_cache(maxsize=65536)
def parse_ip(text: str) -> bytes | None:
    """The address `text` holds, packed (4 bytes for IPv4, 16 for IPv6), or None when it is
    no plain address (a zone index, a prefix, spaces, leading zeros or non-ASCII digits are
    refused). inet_pton, not ipaddress: a tenth of the cost, and validation and enrichment
    both parse every address. Cached: traffic repeats addresses."""
    if len(text) > MAX_IP_LENGTH:
        return None
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_pton(family, text)
        except (OSError, ValueError, UnicodeError):
            continue
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_timestamp(timestamp: Any, window: TimestampWindow, now: float | None) -> None:
    if not _is_int(timestamp):
        raise InvalidTransaction(TIME_COLUMN, "must be Unix epoch seconds (an integer)")
    if not window.earliest <= timestamp <= window.latest(now):
        raise InvalidTransaction(
            TIME_COLUMN,
            f"must be Unix epoch seconds from {window.earliest} to {window.max_ahead_s} s "
            f"ahead of the clock, got {timestamp}",
        )


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
        "balances_missing": msg.balances_missing,
        "stripe_payment_intent_id": msg.stripe_payment_intent_id,
        "stripe_charge_id": msg.stripe_charge_id,
        "stripe_customer_id": msg.stripe_customer_id,
        IP_COLUMN: msg.ip_address,
        "card_country": msg.card_country,
        "billing_country": msg.billing_country,
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
    bad = ~ok | (lengths == 0) | (lengths > MAX_ID_LENGTH) | blank
    if not "".join(strings).isprintable():  # rare: look row by row only then
        bad |= ~np.fromiter(map(str.isprintable, strings), dtype=bool, count=len(ids))
    return bad


def _bad_stripe_ids(ids: Sequence[Any]) -> np.ndarray:
    """Per row: a Stripe id that is not a string, too long, or not printable (empty is
    fine: the transaction is not a Stripe payment)."""
    ok = _of_types(ids, (str,))
    strings = ids if ok.all() else [v if good else "" for v, good in zip(ids, ok, strict=True)]
    lengths = np.fromiter(map(len, strings), dtype=np.int64, count=len(ids))
    bad = ~ok | (lengths > MAX_ID_LENGTH)
    if not "".join(strings).isprintable():  # rare: look row by row only then
        bad |= ~np.fromiter(map(str.isprintable, strings), dtype=bool, count=len(ids))
    return bad


def _bad_location(cols: Mapping[str, Sequence[Any]]) -> np.ndarray | None:
    """Per row: an IP address that does not parse or a country that is no code (None when
    the batch carries no location column)."""
    bad = None
    for name in LOCATION_COLUMNS:
        if (column := cols.get(name)) is None:
            continue
        ok = _of_types(column, (str,))
        strings = (
            column if ok.all() else ["" if not g else v for v, g in zip(column, ok, strict=True)]
        )
        check = _ip_or_empty if name == IP_COLUMN else _country_or_empty
        wrong = ~ok | ~np.fromiter(map(check, strings), dtype=bool, count=len(strings))
        bad = wrong if bad is None else bad | wrong
    return bad


def _ip_or_empty(text: str) -> bool:
    return not text or parse_ip(text) is not None


def _country_or_empty(text: str) -> bool:
    return not text or text in COUNTRY_CODES


def _known_types(types: Sequence[Any]) -> np.ndarray:
    """Per row: the type is one of TRANSACTION_TYPES (a non-string never is)."""
    ok = _of_types(types, (str,))
    strings = types if ok.all() else [v if good else "" for v, good in zip(types, ok, strict=True)]
    return ok & np.fromiter(map(_KNOWN_TYPES.__contains__, strings), bool, len(types))


def _bad_text(column: Sequence[Any], max_length: int) -> np.ndarray:
    """Per row: the value is a string that text_problem refuses (other types pass)."""
    strings = _of_types(column, (str,))
    if not strings.all():
        column = [c if ok else "" for c, ok in zip(column, strings, strict=True)]
    bad = np.fromiter(map(len, column), np.int64, len(column)) > max_length
    if _CONTROL.search("".join(column)):  # rare: look row by row only then
        bad |= np.fromiter((bool(_CONTROL.search(c)) for c in column), bool, len(column))
    return bad


def _suspects(
    cols: Mapping[str, Sequence[Any]], n: int, window: TimestampWindow, now: float
) -> np.ndarray:
    """Rows that may break a rule of validate_transaction: never misses one, and flags a
    valid row only in corner cases (an int too large for float64, or within 512 of 2^63)."""
    missing = [None] * n
    bad = _bad_ids(cols.get(ID_COLUMN, missing))
    users, wrong = _numbers(cols.get(USER_COLUMN, missing), (int,))
    bad |= wrong | ~((users > 0) & (users < 2.0**63))
    times, wrong = _numbers(cols.get(TIME_COLUMN, missing), (int,))
    bad |= wrong | ~((times >= window.earliest) & (times <= window.latest(now)))
    bad |= ~_known_types(cols.get(TYPE_COLUMN, missing))
    for name in NUMERIC_COLUMNS:
        values, wrong = _numbers(cols.get(name, missing), (int, float))
        with np.errstate(invalid="ignore"):
            bad |= wrong | ~(np.abs(values) < MAX_AMOUNT) | (values < 0)
        if name == "amount":
            bad |= values == 0
    channel = cols.get("channel")
    if channel is not None:
        bad |= _bad_text(channel, MAX_TEXT_LENGTH)
    if (flags := cols.get("balances_missing")) is not None:
        bad |= ~_of_types(flags, (bool,))
    for name in STRIPE_ID_COLUMNS:
        if (ids := cols.get(name)) is not None:
            bad |= _bad_stripe_ids(ids)
    if (location := _bad_location(cols)) is not None:
        bad |= location
    return bad


def validate_columns(
    cols: Mapping[str, Sequence[Any]], window: TimestampWindow = DEFAULT_WINDOW
) -> list[tuple[int, InvalidTransaction]]:
    """Validate a micro-batch given as columns (name -> values, one per row): for each
    row that breaks the schema, its index and the error validate_transaction raises.

    The rules run vectorised to find the few suspect rows; each suspect row is then
    judged by validate_transaction itself, so the field and message are the same by
    construction and a rule lives in one place."""
    n = len(cols[ID_COLUMN]) if ID_COLUMN in cols else len(next(iter(cols.values()), ()))
    now = time.time()  # one clock reading for the batch: screen and judge agree
    errors: list[tuple[int, InvalidTransaction]] = []
    for i in np.flatnonzero(_suspects(cols, n, window, now)).tolist():
        try:
            validate_transaction({k: v[i] for k, v in cols.items()}, window, now)
        except InvalidTransaction as err:
            errors.append((i, err))
    return errors
