"""The Stripe integration's pure parts: webhook signature checks (with the stripe library's
own scheme), amounts in major units, stable user ids, and which events become labels."""

from __future__ import annotations

import json
import time

import pytest

from fraudops.schema import InvalidTransaction, proto_to_dict, validate_transaction
from fraudops.settings import Settings
from integrations.stripe.app import WebhookRejected, verify
from integrations.stripe.consumer import decode, outcome_of
from integrations.stripe.events import (
    InvalidEvent,
    NotAPayment,
    label_of,
    major_amount,
    reference,
    stripe_user_id,
    transaction,
)
from serving.labels import LabelError
from tests.helpers.stripe_events import (
    OLD_SECRET,
    SECRET,
    charge,
    dispute,
    event,
    payment_intent,
    sign,
)

SECRETS = [OLD_SECRET, SECRET]


def test_a_signed_event_verifies_with_either_rotated_secret():
    body = event("charge.succeeded", charge())
    assert verify(body, sign(body), SECRETS)["type"] == "charge.succeeded"
    assert verify(body, sign(body, OLD_SECRET), SECRETS)["type"] == "charge.succeeded"


def test_a_header_with_several_v1_signatures_verifies():
    body = event("charge.succeeded", charge())
    t = int(time.time())
    old, new = sign(body, OLD_SECRET, t), sign(body, SECRET, t)
    header = f"{new},{old.split(',')[1]}"
    assert verify(body, header, [SECRET])["id"]
    assert verify(body, header, [OLD_SECRET])["id"]


@pytest.mark.parametrize("case", ["unsigned", "wrong secret", "stale", "changed", "garbage"])
def test_bad_requests_are_rejected(case):
    body = event("charge.succeeded", charge())
    header = {
        "unsigned": None,
        "wrong secret": sign(body, "whsec_someone_else"),
        "stale": sign(body, SECRET, int(time.time()) - 301),
        "changed": sign(body),
        "garbage": "t=abc,v1=nothex",
    }[case]
    if case == "changed":
        body = body.replace(b'"amount": 2599', b'"amount": 1')
    with pytest.raises(WebhookRejected):
        verify(body, header, SECRETS)


def test_signed_garbage_and_no_secret_are_rejected():
    junk = b"\xff\xfe not json"
    with pytest.raises(WebhookRejected):
        verify(junk, sign(b"not json"), SECRETS)
    body = b'{"hello": "world"}'
    with pytest.raises(WebhookRejected, match="event.id: must be a non-empty string"):
        verify(body, sign(body), SECRETS)
    body = b'{"id": "evt_1", "type": "charge.succeeded", "data": []}'
    with pytest.raises(WebhookRejected, match="event.data.object: must be an object"):
        verify(body, sign(body), SECRETS)
    with pytest.raises(WebhookRejected, match="no webhook secret"):
        verify(body, sign(body), [])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"[1, 2]", "event"),  # the stripe library itself fails on this with AttributeError
        (b'"evt_1"', "event"),
        (b'{"id": "evt_\\u0000", "type": "charge.succeeded", "data": {"object": {}}}', "event.id"),
        (b'{"id": "evt_1", "type": "' + b"t" * 256 + b'", "data": {"object": {}}}', "event.type"),
        (b'{"id": "evt_1", "type": "x", "data": {"object": ' + b"9" * 5000 + b"}}", "event"),
    ],
)
def test_a_signed_body_that_is_not_an_event_is_rejected_naming_the_field(body, field):
    with pytest.raises(WebhookRejected) as err:
        verify(body, sign(body), SECRETS)
    assert str(err.value).startswith(f"body is not a Stripe event: {field}: "), str(err.value)


@pytest.mark.parametrize(
    ("minor", "currency", "major"),
    [(2599, "usd", 25.99), (2599, "JPY", 2599.0), (12340, "kwd", 12.34), (500, "krw", 500.0)],
)
def test_amounts_are_in_the_major_unit(minor, currency, major):
    assert major_amount(minor, currency) == pytest.approx(major)


def test_user_ids_are_stable_positive_int64_and_apart_from_other_sources():
    a = stripe_user_id("customer", "cus_123")
    assert a == stripe_user_id("customer", "cus_123") != stripe_user_id("card", "cus_123")
    assert 2**62 <= a < 2**63


def test_a_charge_and_its_payment_intent_are_one_transaction():
    ch = charge(customer="cus_9")
    tx = transaction(ch)
    intent = {"id": ch["payment_intent"], "object": "payment_intent", "amount": 2599,
              "amount_received": 2599, "currency": "usd", "customer": "cus_9",
              "latest_charge": ch["id"], "created": ch["created"]}  # fmt: skip
    same = transaction(intent)
    assert (tx.transaction_id, tx.user_id) == (same.transaction_id, same.user_id)
    assert (tx.stripe_charge_id, same.stripe_charge_id) == (ch["id"], ch["id"])
    assert tx.type == "PAYMENT" and tx.balances_missing and tx.amount == pytest.approx(25.99)
    validate_transaction(proto_to_dict(tx))


def test_a_guest_is_known_by_the_card_and_nothing_else_is_guessed():
    ch = charge()
    assert transaction(ch).user_id == stripe_user_id(
        "card", ch["payment_method_details"]["card"]["fingerprint"]
    )
    del ch["payment_method_details"]
    with pytest.raises(NotAPayment) as err:
        transaction(ch)
    assert err.value.field == "customer"


def test_which_events_are_labels():
    ch = charge()
    fraud = label_of("charge.dispute.created", dispute(ch))
    assert (fraud.transaction_id, fraud.label, fraud.source) == (
        ch["payment_intent"],
        "FRAUD",
        "stripe:dispute",
    )
    won = label_of("charge.dispute.closed", dispute(ch, status="won"))
    assert (won.label, won.source) == ("LEGIT", "stripe:dispute")
    assert label_of("charge.dispute.created", dispute(ch, reason="product_not_received")) is None
    assert label_of("charge.dispute.closed", dispute(ch, status="lost")) is None
    warning = {"id": "issfr_1", "object": "radar.early_fraud_warning", "charge": ch["id"],
               "payment_intent": ch["payment_intent"], "fraud_type": "stolen_card"}  # fmt: skip
    assert (
        label_of("radar.early_fraud_warning.created", warning).source
        == "stripe:early_fraud_warning"
    )
    refund = {"id": "re_1", "object": "refund", "charge": ch["id"], "reason": "fraudulent"}
    assert label_of("refund.created", refund).transaction_id == ch["id"]
    assert label_of("refund.created", {**refund, "reason": "requested_by_customer"}) is None


def test_a_guest_payment_intent_waits_for_its_charge():
    guest = {"id": "pi_guest", "object": "payment_intent", "amount": 100, "currency": "eur",
             "customer": None, "created": int(time.time())}  # fmt: skip
    body = json.loads(event("payment_intent.succeeded", guest))
    assert outcome_of(body, Settings()).kind == "ignored"
    body = json.loads(event("charge.succeeded", charge(amount=0)))
    with pytest.raises(InvalidTransaction, match="amount: must be greater than zero"):
        outcome_of(body, Settings())


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"amount": 10**400}, "amount"),
        ({"amount": -(10**400)}, "amount"),
        ({"amount": 2.5}, "amount"),
        ({"amount": True}, "amount"),
        ({"created": 10**30}, "created"),
        ({"created": "abc"}, "created"),
        ({"created": -1}, "created"),
        ({"currency": ["usd"]}, "currency"),
    ],
)
def test_payment_values_out_of_range_are_named(fields, field):
    with pytest.raises(InvalidEvent) as err:
        transaction(charge(**fields))
    assert err.value.field == field


def test_a_card_of_another_shape_is_no_card():
    ch = charge(customer="cus_1", payment_method_details=["card"], card="x")
    assert transaction(ch).user_id == stripe_user_id("customer", "cus_1")


@pytest.mark.parametrize("created", [10**30, "abc", -5, 1.5])
def test_an_event_created_out_of_range_is_named(created):
    body = json.loads(event("customer.created", {"id": "cus_1", "object": "customer"}))
    body["created"] = created
    with pytest.raises(InvalidEvent) as err:
        decode(json.dumps(body).encode())
    assert err.value.field == "event.created"


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"id": "cus_\x00"}, "id"),
        ({"id": "cus_\ud800"}, "id"),
        ({"id": "x" * 256}, "id"),
        ({"id": 10**400}, "id"),
    ],
)
def test_an_object_id_the_database_cannot_hold_is_named(obj, field):
    body = json.loads(event("customer.created", {"object": "customer", **obj}))
    with pytest.raises(InvalidEvent) as err:
        reference(decode(json.dumps(body).encode())["data"]["object"], "id")
    assert err.value.field == field


def test_a_card_fingerprint_that_is_no_id_is_named():
    ch = charge(payment_method_details={"card": {"fingerprint": "fp\ud800"}})
    with pytest.raises(InvalidEvent) as err:
        transaction(ch)
    assert err.value.field == "card_fingerprint"


def test_a_label_the_label_rules_refuse_is_named_before_it_is_published():
    ch = charge(payment_intent="pi_" + "x" * 100)
    body = json.loads(event("charge.dispute.created", dispute(ch)))
    with pytest.raises(LabelError) as err:
        outcome_of(body, Settings())
    assert err.value.field == "transaction_id"


def test_location_comes_from_the_card_the_billing_address_and_the_merchants_metadata():
    ch = charge(customer="cus_7", metadata={"client_ip": "200.160.0.8"},
                payment_method_details={"card": {"fingerprint": "fp_1", "country": "DE"}},
                billing_details={"address": {"country": "FR"}})  # fmt: skip
    tx = transaction(ch)
    assert (tx.ip_address, tx.card_country, tx.billing_country) == ("200.160.0.8", "DE", "FR")
    validate_transaction(proto_to_dict(tx))
    intent = payment_intent(payment_method={"card": {"country": "BR"}})  # expanded method
    tx = transaction(intent)
    assert (tx.ip_address, tx.card_country, tx.billing_country) == ("", "BR", "")


def test_a_malformed_client_ip_in_metadata_is_refused_naming_the_field():
    tx = transaction(charge(customer="cus_7", metadata={"client_ip": "not-an-ip"}))
    with pytest.raises(InvalidTransaction) as err:
        validate_transaction(proto_to_dict(tx))
    assert err.value.field == "ip_address"
