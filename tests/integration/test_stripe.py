"""The Stripe integration as real processes on real Kafka and Postgres: the endpoint
(`python -m integrations.stripe.app`), its event consumer, the stream scorer and the label
consumer. Webhooks are signed here with the stripe library's own scheme and a test secret;
nothing leaves the machine."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer

from fraudops.modelspec import SPEC_FILE, publish
from fraudops.proto_gen.fraud.v1 import fraud_pb2
from integrations.stripe.events import stripe_user_id
from testkit.stack import create_topics, delete_topics
from tests.helpers.serving_env import (
    consume,
    free_port,
    make_settings,
    publish_model,
    query,
    service_process,
    wait_until,
)
from tests.helpers.stripe_events import OLD_SECRET, SECRET, charge, dispute, event, sign
from tests.helpers.stripe_events import payment_intent as intent
from training.collect_feedback import collect_feedback

pytestmark = pytest.mark.slow
API_KEY = "test-decide-key"


@pytest.fixture(scope="module")
def stack(built_models, kafka_settings, database_url, tmp_path_factory):
    """Settings, and the four processes running with them, for the whole module."""
    root = tmp_path_factory.mktemp("stripe")
    serving_root = root / "serving"
    publish_model(built_models, serving_root, "v1")
    topics = create_topics(kafka_settings, "stripe")
    settings = make_settings(
        **kafka_settings.kafka_login(),
        database_url=database_url,
        model_dir=serving_root,
        consumer_group=f"test-stripe-scorer-{uuid.uuid4().hex[:8]}",
        stripe_port=free_port(),
        stripe_webhook_secrets=f"{OLD_SECRET}, {SECRET}",
        stripe_decide_api_key=API_KEY,
        log_level="DEBUG",  # so that the PII check below sees everything the processes say
        **topics,
    )
    group = f"test-stripe-{uuid.uuid4().hex[:8]}"
    with (
        service_process("integrations.stripe.app", settings, root / "app.log"),
        service_process("integrations.stripe.consumer", settings, root / "events.log",
                        "--group", group),
        service_process("serving.scorer", settings, root / "scorer.log"),
        service_process("serving.label_consumer", settings, root / "labels.log",
                        "--group", f"{group}-labels"),
    ):  # fmt: skip
        base = f"http://127.0.0.1:{settings.stripe_port}"
        with httpx.Client(base_url=base, timeout=10) as client:
            wait_until(lambda: _answers(client), "the Stripe endpoint to serve a decision", 90)
            yield settings, client, root
    delete_topics(kafka_settings, list(topics.values()))


def _answers(client: httpx.Client) -> bool:
    try:
        return decide(client, intent()).status_code == 200
    except httpx.TransportError:
        return False


def decide(client: httpx.Client, body: dict, key: str | None = API_KEY) -> httpx.Response:
    headers = {"X-Api-Key": key} if key else {}
    return client.post("/stripe/decide", json=body, headers=headers)


def deliver(client: httpx.Client, body: bytes, header: str | None = "sign") -> httpx.Response:
    """POST a webhook as Stripe does; `header` "sign" signs it with the test secret."""
    headers = {"Content-Type": "application/json"}
    if header == "sign":
        header = sign(body)
    if header is not None:
        headers["Stripe-Signature"] = header
    return client.post("/stripe/webhook", content=body, headers=headers)


def events_until(settings, event_id: str, timeout: float = 60) -> list[bytes]:
    """The stripe_events topic from the start up to the message of `event_id`."""
    consumer = Consumer(settings.kafka_config(**{
        "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest", "enable.auto.commit": False,
    }))  # fmt: skip
    consumer.subscribe([settings.topic_stripe_events])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            values += [m.value() for m in consumer.consume(100, 0.5) if m.error() is None]
            if any(event_id.encode() in v for v in values):
                return values
    finally:
        consumer.close()
    raise AssertionError(f"{event_id} never reached {settings.topic_stripe_events}")


def scored(url: str, tx_id: str) -> list[tuple]:
    return query(
        url,
        "SELECT user_id, type, amount, old_balance_orig, channel, source FROM scored_transactions"
        " WHERE transaction_id = %s",
        (tx_id,),
    )


def events_recorded(url: str, event_ids: list[str]) -> list[tuple]:
    return query(
        url, "SELECT event_id, outcome FROM stripe_events WHERE event_id = ANY(%s)", (event_ids,)
    )


def label_of(url: str, tx_id: str) -> tuple | None:
    rows = query(
        url,
        "SELECT label, source, supersedes FROM feedback_labels WHERE transaction_id = %s",
        (tx_id,),
    )
    return rows[0] if rows else None


def test_a_payment_lands_on_kafka_and_is_scored_once_however_often_it_arrives(stack):
    settings, client, _ = stack
    url = settings.database_url
    ch = charge(amount=125000, currency="jpy", customer="cus_stripe_test")
    body = event("charge.succeeded", ch)
    pi = {"id": ch["payment_intent"], "object": "payment_intent", "amount": 125000,
          "amount_received": 125000, "currency": "jpy", "customer": "cus_stripe_test",
          "latest_charge": ch["id"], "created": ch["created"]}  # fmt: skip
    second = event("payment_intent.succeeded", pi)
    for payload in (body, body, second, body):  # Stripe retries; both events name one payment
        assert deliver(client, payload).status_code == 200
    tx_id = ch["payment_intent"]
    wait_until(lambda: scored(url, tx_id), "the payment to be scored", 90)
    user = stripe_user_id("customer", "cus_stripe_test")
    assert scored(url, tx_id) == [(user, "PAYMENT", 125000.0, None, "stripe", "stream")]
    ids = [json.loads(b)["id"] for b in (body, second)]
    wait_until(lambda: len(events_recorded(url, ids)) == 2, "both events to be recorded", 60)
    assert sorted(o for _, o in events_recorded(url, ids)) == ["duplicate_payment", "transaction"]
    raw = consume(settings, settings.topic_raw, 1, 30)
    mine = [fraud_pb2.TransactionRequest.FromString(m.value()) for m in raw]
    mine = [m for m in mine if m.transaction_id == tx_id]
    assert len(mine) == 1
    assert mine[0].balances_missing and mine[0].stripe_charge_id == ch["id"]
    assert mine[0].stripe_customer_id == "cus_stripe_test" and mine[0].user_id == user


@pytest.mark.parametrize("case", ["unsigned", "bad signature", "stale", "changed", "garbage"])
def test_a_request_that_is_not_a_verified_event_gets_400_and_changes_nothing(stack, case):
    settings, client, _ = stack
    body = event("charge.succeeded", charge(customer="cus_never"))
    event_id = json.loads(body)["id"]
    header = {
        "unsigned": None,
        "bad signature": sign(body, "whsec_not_ours"),
        "stale": sign(body, SECRET, int(time.time()) - 400),
        "changed": sign(body),
        "garbage": sign(b"{not json at all"),  # signed, yet no event
    }[case]
    if case == "changed":
        body = body.replace(b'"amount": 2599', b'"amount": 1')
    if case == "garbage":
        body = b"{not json at all"
    assert deliver(client, body, header).status_code == 400
    # A verified event sent after it: once that one is on the topic, the refused one would be.
    after = event("customer.created", {"id": "cus_after", "object": "customer"})
    assert deliver(client, after).status_code == 200
    on_topic = events_until(settings, json.loads(after)["id"])
    assert not [v for v in on_topic if event_id.encode() in v]
    wait_until(lambda: events_recorded(settings.database_url, [json.loads(after)["id"]]),
               "the later event to be processed", 60)  # fmt: skip
    assert events_recorded(settings.database_url, [event_id]) == []


def test_a_body_past_the_limit_gets_413_before_anything_is_read_into_an_event(stack):
    settings, client, _ = stack
    padded = json.loads(event("charge.succeeded", charge(customer="cus_huge")))
    padded["padding"] = "x" * (1 << 20)
    body = json.dumps(padded).encode()
    assert deliver(client, body, sign(body)).status_code == 413
    assert events_recorded(settings.database_url, [padded["id"]]) == []


def test_a_fraudulent_dispute_is_a_label_for_the_next_training_run(stack, tmp_path):
    settings, client, _ = stack
    url = settings.database_url
    ch = charge(customer="cus_disputed")
    tx_id = ch["payment_intent"]
    assert deliver(client, event("charge.succeeded", ch)).status_code == 200
    wait_until(lambda: scored(url, tx_id), "the payment to be scored", 90)
    assert deliver(client, event("charge.dispute.created", dispute(ch))).status_code == 200
    wait_until(lambda: label_of(url, tx_id), "the dispute to become a label", 60)
    assert label_of(url, tx_id) == ("FRAUD", "stripe:dispute", None)
    collect_feedback(url, tmp_path / "labels.parquet", tmp_path / "feedback.json", 0)
    rows = pq.read_table(tmp_path / "labels.parquet").to_pylist()
    mine = [(r["is_fraud"], r["label_source"], r["balances_missing"])
            for r in rows if r["transaction_id"] == tx_id]  # fmt: skip
    assert mine == [(1, "stripe:dispute", True)]
    won = dispute(ch, status="won")
    assert deliver(client, event("charge.dispute.closed", won)).status_code == 200
    wait_until(lambda: label_of(url, tx_id)[0] == "LEGIT", "the won dispute to supersede", 60)
    assert label_of(url, tx_id) == ("LEGIT", "stripe:dispute", "FRAUD")


def _thresholds_around(source: Path, out: Path, score: float) -> Path:
    """A copy of a built model whose CHALLENGE band is centred on `score`."""
    shutil.copytree(source, out)
    spec = json.loads((out / SPEC_FILE).read_text())
    spec["thresholds"] = {"challenge": score / 2, "block": (1 + score) / 2}
    (out / SPEC_FILE).write_text(json.dumps(spec))
    return out


def test_the_inline_decision_asks_for_3d_secure_in_the_challenge_band(stack, built_models):
    settings, client, root = stack
    assert decide(client, intent(), key=None).status_code == 401
    assert decide(client, intent(), key="wrong").status_code == 401
    # A new customer has no history, so the same payment scores the same for any of them.
    payment = {"amount": 4200, "currency": "eur", "created": int(time.time()) - 60}
    first = decide(client, intent(**payment)).json()
    model = _thresholds_around(built_models / "v1", root / "v-3ds", first["score"])
    publish(model, settings.model_dir, "v-3ds")
    wait_until(lambda: decide(client, intent(**payment)).json()["model_version"] == "v-3ds",
               "the new thresholds to be served", 60)  # fmt: skip
    pi = intent(**payment)
    answer = decide(client, pi)
    assert answer.status_code == 200
    got = answer.json()
    assert (got["band"], got["action"], got["confirm"]) == ("CHALLENGE", "confirm_with_3ds", True)
    assert got["score"] == pytest.approx(first["score"], abs=1e-6)
    assert got["confirm_params"] == {
        "payment_method_options": {"card": {"request_three_d_secure": "challenge"}}
    }
    assert got["reasons"] and got["payment_intent"] == pi["id"]
    wait_until(lambda: scored(settings.database_url, pi["id"]), "the decision to be stored", 30)
    assert scored(settings.database_url, pi["id"])[0][3:] == (None, "stripe", "inline")
    bad = decide(client, {**intent(), "amount": "lots"})
    assert bad.status_code == 422 and "amount" in bad.json()["detail"]


def test_no_e_mail_or_card_number_from_stripe_reaches_a_log(stack):
    settings, client, root = stack
    email, pan = "alice.payer@example.com", "4242424242424242"
    details = {"email": email, "name": "Alice Payer"}
    ch = charge(customer="cus_pii", receipt_email=email, billing_details=details,
                description=f"card {pan}")  # fmt: skip
    assert deliver(client, event("charge.succeeded", ch)).status_code == 200
    assert deliver(client, event("charge.succeeded", ch), "t=1,v1=00").status_code == 400
    assert decide(client, intent(receipt_email=email, description=pan)).status_code == 200
    assert decide(client, {**intent(receipt_email=email), "amount": -5}).status_code == 422
    wait_until(lambda: scored(settings.database_url, ch["payment_intent"]), "the payment", 90)
    for log in root.glob("*.log"):
        text = log.read_text(errors="replace")
        assert email not in text and pan not in text, log.name


def _with(body: bytes, **fields) -> bytes:
    """A webhook body with event-level fields replaced."""
    return json.dumps({**json.loads(body), **fields}).encode()


def test_an_event_fraudops_cannot_take_is_dead_lettered_with_its_reason_and_the_rest_go_on(
    stack,
):
    settings, client, _ = stack
    url = settings.database_url
    ch = charge(customer="cus_after_poison")
    same_payment = {"payment_intent": ch["payment_intent"]}  # one key: one partition, in order
    poison = [  # (the field its reason names, the event)
        ("amount", event("charge.succeeded", charge(amount=10**400, **same_payment))),
        ("created", event("charge.succeeded", charge(created="abc", **same_payment))),
        ("event.created", _with(event("charge.succeeded", charge(**same_payment)), created=10**30)),
        ("event.created", _with(event("charge.succeeded", charge(**same_payment)), created="abc")),
    ]
    for _, body in poison:
        assert deliver(client, body).status_code == 200  # signed: kept, not refused
    assert deliver(client, event("charge.succeeded", ch)).status_code == 200
    wait_until(lambda: scored(url, ch["payment_intent"]), "the payment behind the poison", 90)
    ids = {json.loads(body)["id"]: field for field, body in poison}
    dead = consume(settings, settings.topic_stripe_events_dlq, len(ids))
    reasons = {json.loads(m.value())["id"]: dict(m.headers())["error"].decode() for m in dead}
    assert set(reasons) == set(ids)
    for event_id, field in ids.items():
        assert reasons[event_id].startswith(f"{field}: "), reasons[event_id]
    assert events_recorded(url, list(ids)) == []  # dead-lettered, not claimed


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"amount": 10**400}, "amount"), ({"created": 10**30}, "created"),
     ({"created": "abc"}, "created")],
)  # fmt: skip
def test_a_decision_on_numbers_out_of_range_is_422_naming_the_field(stack, fields, field):
    _, client, _ = stack
    answer = decide(client, intent(**fields))
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"].startswith(f"{field}: ")


def test_a_signed_body_that_is_not_an_event_object_is_400_naming_the_problem(stack):
    _, client, _ = stack
    answer = deliver(client, b'[{"id": "evt_1", "type": "charge.succeeded"}]')
    assert answer.status_code == 400
    assert answer.json()["detail"] == "body is not a Stripe event: event: must be a JSON object"
