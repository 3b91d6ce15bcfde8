"""What a Stripe object means to fraudops: a payment becomes a TransactionRequest, a
fraudulent dispute, an early fraud warning or a fraudulent refund becomes a label.

Pure functions over the JSON Stripe sends (plain dicts), shared by the webhook consumer and
the inline decision endpoint, so a payment decided inline and the same payment arriving by
webhook are one transaction: its id is the PaymentIntent id (the charge id only for a
charge made without one), and its user is derived the same way."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fraudops.proto_gen.fraud.v1 import fraud_pb2
from fraudops.schema import FieldError

# Currencies Stripe counts in whole units, and those it counts in thousandths; the rest
# are in hundredths (Stripe's "zero-decimal" and "three-decimal" currency lists).
ZERO_DECIMAL = frozenset(
    ("bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
     "xaf", "xof", "xpf")
)  # fmt: skip
THREE_DECIMAL = frozenset(("bhd", "jod", "kwd", "omr", "tnd"))
CHANNEL = "stripe"
PAYMENT_EVENTS = ("payment_intent.succeeded", "charge.succeeded")
# Stripe user ids live in [2^62, 2^63): clear of the small ids other sources use.
_USER_BASE = 1 << 62
INT64_MAX = (1 << 63) - 1  # amounts and timestamps travel as int64 (proto, Postgres BIGINT)
MAX_NAME_LENGTH = 255  # Stripe's ids and event types are far shorter


class InvalidEvent(FieldError):
    """A Stripe event or object fraudops cannot use."""


class NotAPayment(InvalidEvent):
    """A payment object fraudops cannot score."""


def check_event(event: Any) -> dict[str, Any]:
    """`event` if it has what everything that takes an event reads: an `id` and a `type`
    (short printable strings) and a `data.object` (an object); InvalidEvent otherwise."""
    if not isinstance(event, dict):
        raise InvalidEvent("event", "must be a JSON object")
    for name in ("id", "type"):
        value = event.get(name)
        if not isinstance(value, str) or not value:
            raise InvalidEvent(f"event.{name}", "must be a non-empty string")
        _checked_id(value, f"event.{name}")
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise InvalidEvent("event.data.object", "must be an object")
    return event


def parse_event(body: bytes | None) -> dict[str, Any]:
    """The event a webhook body holds (check_event's checks); InvalidEvent otherwise."""
    try:
        event = json.loads(body or b"")
    except ValueError as err:  # not JSON, not UTF-8, or an integer of thousands of digits
        raise InvalidEvent("event", f"not JSON ({err})") from err
    return check_event(event)


def unix_seconds(value: Any, field: str, default: int) -> int:
    """A Stripe timestamp (Unix seconds), `default` when absent; InvalidEvent naming
    `field` for anything but an integer from 0 to 2^63 - 1."""
    if value is None:
        return default
    if not _is_int(value) or not 0 <= value <= INT64_MAX:
        raise InvalidEvent(field, "must be Unix seconds, an integer from 0 to 2^63 - 1")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Label:
    transaction_id: str
    label: str  # FRAUD or LEGIT
    source: str
    note: str

    def request(self) -> fraud_pb2.LabelRequest:
        return fraud_pb2.LabelRequest(
            transaction_id=self.transaction_id,
            label=fraud_pb2.Label.Value(self.label),
            source=self.source,
            note=self.note,
        )


def major_amount(minor: int, currency: str) -> float:
    """An amount in the currency's major unit (Stripe sends the smallest unit)."""
    code = currency.lower()
    if code in ZERO_DECIMAL:
        return float(minor)
    return minor / (1000.0 if code in THREE_DECIMAL else 100.0)


def stripe_user_id(kind: str, stripe_id: str) -> int:
    """A stable positive int64 for a Stripe customer or card fingerprint."""
    digest = hashlib.sha256(f"stripe:{kind}:{stripe_id}".encode()).digest()
    return _USER_BASE + int.from_bytes(digest[:8], "big") % _USER_BASE


def reference(obj: Mapping[str, Any], key: str) -> str:
    """The Stripe id `obj[key]` names, whether the id itself or the expanded object ("" if
    none); InvalidEvent naming `key` for one that is not a short printable string."""
    value = obj.get(key)
    ref = value.get("id") if isinstance(value, Mapping) else value
    return _checked_id(str(ref or ""), key)


def _checked_id(ref: str, field: str) -> str:
    if len(ref) > MAX_NAME_LENGTH or not ref.isprintable():
        raise InvalidEvent(field, f"must be up to {MAX_NAME_LENGTH} printable characters")
    return ref


def _holders(obj: Mapping[str, Any]):
    """The objects that may describe a payment's card, best first, each with its card: a
    charge, a PaymentIntent's expanded latest charge, its expanded payment method."""
    for holder in (obj, obj.get("latest_charge"), obj.get("payment_method")):
        if isinstance(holder, Mapping):
            details = _mapping(holder.get("payment_method_details"))
            yield holder, _mapping(details.get("card")) or _mapping(holder.get("card"))


def _fingerprint(obj: Mapping[str, Any]) -> str:
    """The card fingerprint of a charge, of a PaymentIntent's expanded latest charge or
    payment method, or given by a checkout as `card_fingerprint`."""
    for holder, card in _holders(obj):
        found = holder.get("card_fingerprint") or card.get("fingerprint")
        if found:
            return _checked_id(str(found), "card_fingerprint")
    return ""


def location_of(obj: Mapping[str, Any]) -> dict[str, str]:
    """What Stripe tells of where a payment comes from (unvalidated; empty = unknown): the
    card's issuing country (`card.country` of the charge's payment_method_details or of the
    payment method), the billing address's country (`billing_details.address.country`), and
    the client's IP address, which Stripe's payment objects do not carry: the merchant passes
    it in the PaymentIntent's (or charge's) metadata as `client_ip`."""
    card_country = billing = ""
    for holder, card in _holders(obj):
        card_country = card_country or _text(card.get("country"))
        address = _mapping(_mapping(holder.get("billing_details")).get("address"))
        billing = billing or _text(address.get("country"))
    ip = _text(_mapping(obj.get("metadata")).get("client_ip"))
    return {"ip_address": ip, "card_country": card_country, "billing_country": billing}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _mapping(value: Any) -> Mapping[str, Any]:
    """`value` if it is an object, else an empty one: a field of another shape is absent."""
    return value if isinstance(value, Mapping) else {}


def user_of(obj: Mapping[str, Any]) -> int:
    """The user a payment belongs to: its customer, else its card."""
    if customer := reference(obj, "customer"):
        return stripe_user_id("customer", customer)
    if fingerprint := _fingerprint(obj):
        return stripe_user_id("card", fingerprint)
    raise NotAPayment("customer", "neither a customer nor a card fingerprint to tell the payer")


def transaction_id_of(obj: Mapping[str, Any]) -> str:
    """The transaction a Stripe object is about: its PaymentIntent, else its charge."""
    if obj.get("object") == "payment_intent":
        return reference(obj, "id")
    return reference(obj, "payment_intent") or reference(obj, "charge") or reference(obj, "id")


def transaction(obj: Mapping[str, Any], now: float | None = None) -> fraud_pb2.TransactionRequest:
    """The TransactionRequest of a PaymentIntent or a charge (unvalidated: the caller runs
    the schema). Card payments carry no account balances: they are marked missing."""
    is_intent = obj.get("object", "payment_intent") == "payment_intent"
    amount = obj.get("amount_received") or obj.get("amount")
    if not _is_int(amount) or abs(amount) > INT64_MAX:
        raise NotAPayment("amount", "must be an integer in the currency's smallest unit, "
                          "below 2^63 in magnitude")  # fmt: skip
    currency = obj.get("currency")
    if not isinstance(currency, str) or not currency:
        raise NotAPayment("currency", "must be a three-letter ISO code")
    created = unix_seconds(obj.get("created"), "created", int(time.time() if now is None else now))
    charge = reference(obj, "latest_charge") if is_intent else reference(obj, "id")
    intent = reference(obj, "id") if is_intent else reference(obj, "payment_intent")
    return fraud_pb2.TransactionRequest(
        transaction_id=transaction_id_of(obj),
        user_id=user_of(obj),
        amount=major_amount(amount, currency),
        timestamp=created,
        type="PAYMENT",
        channel=CHANNEL,
        balances_missing=True,
        stripe_payment_intent_id=intent,
        stripe_charge_id=charge,
        stripe_customer_id=reference(obj, "customer"),
        **location_of(obj),
    )


def label_of(event_type: str, obj: Mapping[str, Any]) -> Label | None:
    """The verdict an event carries, or None: a fraudulent dispute, an early fraud warning
    or a fraudulent refund says FRAUD; a fraudulent dispute the merchant won says LEGIT."""
    tx_id = transaction_id_of(obj)
    ref = reference(obj, "id")
    fraudulent = obj.get("reason") == "fraudulent"
    if event_type == "charge.dispute.created" and fraudulent:
        return Label(tx_id, "FRAUD", "stripe:dispute", f"dispute {ref} opened: fraudulent")
    if event_type == "charge.dispute.closed" and fraudulent and obj.get("status") == "won":
        return Label(tx_id, "LEGIT", "stripe:dispute", f"dispute {ref} won by the merchant")
    if event_type == "radar.early_fraud_warning.created":
        kind = obj.get("fraud_type") or "unspecified"
        return Label(tx_id, "FRAUD", "stripe:early_fraud_warning", f"warning {ref}: {kind}")
    if event_type in ("refund.created", "refund.updated") and fraudulent:
        return Label(tx_id, "FRAUD", "stripe:refund", f"refund {ref}: fraudulent")
    return None
