"""Stripe events for the tests and the benchmark, shaped like the JSON Stripe sends and
signed with the stripe library's own scheme (`t=...,v1=HMAC-SHA256(secret, "t.body")`)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import stripe

SECRET = "whsec_test_fraudops"
OLD_SECRET = "whsec_test_rotated_out"


def sign(payload: bytes, secret: str = SECRET, timestamp: int | None = None) -> str:
    """A Stripe-Signature header for `payload`."""
    return stripe.WebhookSignature.generate_signature_header(payload.decode(), secret, timestamp)


def event(kind: str, obj: dict[str, Any], event_id: str | None = None) -> bytes:
    """The body of a webhook delivery of `obj` as event type `kind`."""
    body = {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": "2026-10-28",
        "created": int(time.time()),
        "livemode": False,
        "type": kind,
        "data": {"object": obj},
    }
    return json.dumps(body).encode()


def charge(
    amount: int = 2599, currency: str = "usd", customer: str | None = None, **fields
) -> dict[str, Any]:
    """A succeeded card charge of a PaymentIntent (ids random unless given)."""
    run = uuid.uuid4().hex[:16]
    obj = {
        "id": f"ch_{run}",
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "currency": currency,
        "customer": customer,
        "created": int(time.time()) - 5,
        "payment_intent": f"pi_{run}",
        "paid": True,
        "status": "succeeded",
        "payment_method_details": {"type": "card", "card": {"fingerprint": f"fp{run[:10]}"}},
    }
    obj.update(fields)
    return obj


def payment_intent(amount: int = 2599, currency: str = "usd", **fields) -> dict[str, Any]:
    """A PaymentIntent before confirmation, as a checkout holds it."""
    obj = {
        "id": f"pi_{uuid.uuid4().hex[:16]}",
        "object": "payment_intent",
        "amount": amount,
        "currency": currency,
        "customer": f"cus_{uuid.uuid4().hex[:12]}",
        "created": int(time.time()) - 2,
        "status": "requires_confirmation",
    }
    obj.update(fields)
    return obj


def dispute(tx: dict[str, Any], reason: str = "fraudulent", status: str = "needs_response"):
    """A dispute on the charge `tx`."""
    return {
        "id": f"dp_{uuid.uuid4().hex[:16]}",
        "object": "dispute",
        "amount": tx["amount"],
        "charge": tx["id"],
        "payment_intent": tx["payment_intent"],
        "reason": reason,
        "status": status,
    }
