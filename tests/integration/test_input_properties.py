"""Property: the validators are exactly the edge the stores need. Every TransactionRequest
or LabelRequest the validator accepts is stored by the real writers (scored_transactions,
feedback_labels) and carried by Kafka, and reads back equal; every one it rejects is
answered INVALID_ARGUMENT by the real gRPC server, naming the field the validator named.

Examples start valid and have up to two fields replaced by hostile values (NUL and other
control characters, any Unicode, int64 and float extremes), so both sides are exercised.

The Stripe doors take JSON, so their hostile values are any JSON value (numbers of hundreds
of digits, arrays, objects, null): a decision is 200 or 422 naming the field, a signed
webhook 200 or 400, and the event consumer takes an event or rejects it naming the field,
which sends it to its DLQ; nothing else escapes to stop the consumer."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
from confluent_kafka import Message
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from fraudops.proto_gen.fraud.v1 import fraud_pb2, fraud_pb2_grpc
from fraudops.schema import (
    DEFAULT_WINDOW,
    NUMERIC_COLUMNS,
    TRANSACTION_TYPES,
    InvalidTransaction,
    proto_to_dict,
    validate_transaction,
)
from integrations.stripe.app import create_app
from integrations.stripe.consumer import StripeConsumer
from serving.callers import source_refusal
from serving.consumer_loop import Rejected
from serving.kafka_io import AckingProducer, make_producer
from serving.labels import LabelError, label_name, validate_label
from serving.model_store import ModelStore
from serving.persistence import ScoreWriter
from serving.scoring import ScoringCore
from testkit.stack import TEST_SOURCES, fresh_database
from tests.helpers.serving_env import (
    channel_to,
    consume,
    insert_scored,
    issue_token,
    make_settings,
    publish_model,
    query,
    running_app,
    wait_serving,
)
from tests.helpers.stripe_events import SECRET, sign

EXAMPLES = hypothesis_settings(
    max_examples=200,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure reproduces, nothing flakes
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
INT64 = st.integers(-(2**63), 2**63 - 1)
CONTROL = st.characters(codec="utf-8", categories=["Cc"])  # NUL, newline, ESC, DEL, C1
ANY_TEXT = (
    st.text(max_size=80)
    | st.tuples(st.text(max_size=8), CONTROL, st.text(max_size=8)).map("".join)
    | st.text(min_size=60, max_size=70)
)
PLAIN_ID = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64)
GOOD_TRANSACTION = {
    "transaction_id": PLAIN_ID,
    "user_id": st.integers(1, 2**63 - 1),
    "amount": st.floats(0.01, 1e9),
    "timestamp": st.integers(DEFAULT_WINDOW.earliest, int(time.time())),
    "type": st.sampled_from(TRANSACTION_TYPES),
    **{name: st.floats(0, 1e9) for name in NUMERIC_COLUMNS[1:]},
    "dest_id": INT64,
    "channel": st.sampled_from(["", "web", "pos", "app"]),
}
HOSTILE_TRANSACTION = {
    "transaction_id": ANY_TEXT,
    "user_id": INT64,
    "amount": st.floats(),
    "timestamp": INT64,
    "type": ANY_TEXT,
    **{name: st.floats() for name in NUMERIC_COLUMNS[1:]},
    "dest_id": INT64,
    "channel": ANY_TEXT,
}
GOOD_LABEL = {
    "transaction_id": PLAIN_ID,
    "label": st.sampled_from([fraud_pb2.FRAUD, fraud_pb2.LEGIT]),
    "source": st.sampled_from(["test:alice", "chargeback:visa"]),
    "note": st.sampled_from(["", "card reported stolen", "refund confirmed"]),
}
HOSTILE_LABEL = {
    "transaction_id": ANY_TEXT,
    "label": st.integers(-(2**31), 2**31 - 1),
    "source": ANY_TEXT,
    "note": ANY_TEXT | st.text(min_size=500, max_size=600),
}


# Any JSON value, with the numbers that overflow a float or an int64 among them.
JSON_VALUE = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([10**400, -(10**400), 10**30, 2**63, 2**63 - 1, -1, 0])
    | st.floats()
    | ANY_TEXT
    | st.lists(st.integers(), max_size=3)
    | st.dictionaries(st.text(max_size=5), st.integers(), max_size=2)
)
STRIPE_ID = st.text("0123456789abcdef", min_size=12, max_size=12)
INTENT_FIELDS = ["amount", "amount_received", "currency", "customer", "created", "id",
                 "object", "latest_charge", "payment_method", "card_fingerprint",
                 "payment_method_details", "payment_intent", "charge", "reason",
                 "status"]  # fmt: skip
EVENT_FIELDS = ["id", "type", "created", "livemode", "data", "object"]
EVENT_TYPES = ["payment_intent.succeeded", "charge.succeeded", "charge.dispute.created",
               "charge.dispute.closed", "radar.early_fraud_warning.created", "refund.created",
               "customer.created"]  # fmt: skip
NAMES_A_FIELD = re.compile(r"[a-z_][a-z_.\[\]0-9]*: ")


def hostile(draw, obj: dict, names: list[str]) -> dict:
    """`obj` with up to two of `names` set to any JSON value."""
    for name in draw(st.lists(st.sampled_from(names), max_size=2, unique=True)):
        obj[name] = draw(JSON_VALUE)
    return obj


@st.composite
def stripe_objects(draw) -> dict:
    """A payment (PaymentIntent or charge) or a dispute, up to two fields hostile."""
    run = draw(STRIPE_ID)
    obj = {
        "id": f"{draw(st.sampled_from(['pi', 'ch', 'dp']))}_{run}",
        "object": draw(st.sampled_from(["payment_intent", "charge", "dispute"])),
        "amount": draw(st.integers(1, 10**8)),
        "currency": draw(st.sampled_from(["usd", "jpy", "kwd", "eur"])),
        "customer": draw(st.sampled_from([None, f"cus_{run}"])),
        "created": int(time.time()) - draw(st.integers(0, 86400)),
        "payment_intent": f"pi_{run}",
        "reason": "fraudulent",
        "status": "won",
        "payment_method_details": {"card": {"fingerprint": f"fp_{run}"}},
    }
    return hostile(draw, obj, INTENT_FIELDS)


@st.composite
def stripe_events(draw) -> dict:
    """An event of one of the types fraudops reads, up to two fields hostile (the object's
    fields included)."""
    event = {
        "id": f"evt_{draw(STRIPE_ID)}",
        "object": "event",
        "type": draw(st.sampled_from(EVENT_TYPES)),
        "created": int(time.time()),
        "livemode": False,
        "data": {"object": draw(stripe_objects())},
    }
    return hostile(draw, event, EVENT_FIELDS)


@st.composite
def messages(draw, message_type, good: dict, hostile: dict):
    """A message with valid fields, up to two of them replaced by hostile values."""
    fields = {name: draw(strategy) for name, strategy in good.items()}
    for name in draw(st.lists(st.sampled_from(sorted(hostile)), max_size=2, unique=True)):
        fields[name] = draw(hostile[name])
    return message_type(**fields)


@pytest.fixture
def property_database(database_url: str) -> Iterator[str]:
    """A database of its own: the examples reuse transaction ids freely."""
    with fresh_database(database_url, "fraudops_props") as url:
        yield url


@pytest.fixture
def app(v1_settings, property_database):
    settings = v1_settings(
        "test-properties",
        database_url=property_database,
        client_token=issue_token(property_database, "tests-all"),  # before the server starts
    )
    with running_app(settings) as app:
        yield app


@pytest.fixture
def channel(app):
    with channel_to(app.port, app.settings.client_token) as ch:
        wait_serving(ch)
        yield ch


def rejected_field(call, request) -> str:
    """Call an RPC that must refuse `request`; returns the field its message names."""
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    return err.value.details().split(":", 1)[0]


def forget(url: str, tx_id: str) -> None:
    """Remove an earlier example's rows for this id, so the next write is a first write."""
    query(url, "DELETE FROM feedback_labels WHERE transaction_id = %s RETURNING 1", (tx_id,))
    query(url, "DELETE FROM scored_transactions WHERE transaction_id = %s RETURNING 1", (tx_id,))


STORED_TRANSACTION = (
    "SELECT transaction_id, user_id, event_ts, type, amount, old_balance_orig, "
    "new_balance_orig, old_balance_dest, new_balance_dest, is_unauthorized_overdraft, "
    "dest_id, coalesce(channel, '') FROM scored_transactions WHERE transaction_id = %s"
)


def test_accepted_transactions_are_stored_and_rejected_ones_named(app, channel):
    url = app.settings.database_url
    core = ScoringCore(ModelStore(app.settings.model_dir))
    core.store.load_latest()
    writer = ScoreWriter(url)
    scoring = fraud_pb2_grpc.FraudScoringStub(channel)
    ingestion = fraud_pb2_grpc.FraudIngestionStub(channel)
    sent: dict[tuple[int, int], fraud_pb2.TransactionRequest] = {}

    @EXAMPLES
    @given(messages(fraud_pb2.TransactionRequest, GOOD_TRANSACTION, HOSTILE_TRANSACTION))
    def check(request):
        tx = proto_to_dict(request)
        try:
            validate_transaction(tx)
        except InvalidTransaction as err:
            assert rejected_field(scoring.Score, request) == err.field
            assert rejected_field(ingestion.SendTransaction, request) == err.field
            batch = fraud_pb2.ScoreBatchRequest(transactions=[request])
            assert rejected_field(scoring.ScoreBatch, batch) == f"transactions[0].{err.field}"
            return
        forget(url, tx["transaction_id"])
        result = writer.write([(core.score([tx]), "stream")])
        assert (result.inserted, result.refused) == (1, [])
        columns = ("transaction_id", "user_id", "timestamp", "type", *NUMERIC_COLUMNS)
        expected = (*(tx[c] for c in columns), tx["dest_id"], tx["channel"])
        assert query(url, STORED_TRANSACTION, (tx["transaction_id"],)) == [expected]
        ack = ingestion.SendTransaction(request, timeout=30)
        sent[(ack.partition, ack.offset)] = request

    try:
        check()
    finally:
        writer.close()
    assert sent, "no example was accepted: the strategy is too hostile"
    on_kafka = consume(app.settings, app.settings.topic_raw, len(sent))
    read_back = {
        (m.partition(), m.offset()): fraud_pb2.TransactionRequest.FromString(m.value())
        for m in on_kafka
    }
    assert read_back == sent


def test_accepted_labels_are_stored_and_rejected_ones_named(app, channel):
    url = app.settings.database_url
    feedback = fraud_pb2_grpc.FeedbackStub(channel)
    topic = app.settings.topic_labels
    expected: dict[bytes, fraud_pb2.LabelRequest] = {}
    producer = app._producer

    @EXAMPLES
    @given(messages(fraud_pb2.LabelRequest, GOOD_LABEL, HOSTILE_LABEL))
    def check(request):
        try:
            name = validate_label(
                request.transaction_id, request.label, request.source, request.note
            )
        except LabelError as err:
            assert rejected_field(feedback.SubmitLabel, request) == err.field
            return
        if source_refusal(TEST_SOURCES, request.source, "the test caller"):
            with pytest.raises(grpc.RpcError) as err:
                feedback.SubmitLabel(request, timeout=10)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            return
        forget(url, request.transaction_id)
        insert_scored(url, request.transaction_id)
        ack = feedback.SubmitLabel(request, timeout=10)
        assert label_name(ack.label) == name
        stored = query(
            url,
            "SELECT label, source, note FROM feedback_labels WHERE transaction_id = %s",
            (request.transaction_id,),
        )
        assert stored == [(name, request.source, request.note)]
        key = uuid.uuid4().hex.encode()
        producer.send(topic, key, request.SerializeToString())
        expected[key] = request

    check()
    assert expected, "no example was accepted: the strategy is too hostile"
    on_kafka = consume(app.settings, topic, len(expected))
    assert {m.key(): fraud_pb2.LabelRequest.FromString(m.value()) for m in on_kafka} == expected


@pytest.fixture
def stripe_settings(built_models, serving_root, kafka_settings, kafka_topics, property_database):
    publish_model(built_models, serving_root, "v1")
    return make_settings(
        **kafka_settings.kafka_login(), database_url=property_database,
        model_dir=serving_root, stripe_webhook_secrets=SECRET, stripe_decide_api_key="key",
        **kafka_topics(),
    )  # fmt: skip


def test_stripe_decisions_are_made_or_refused_naming_the_field(stripe_settings):
    @EXAMPLES
    @given(stripe_objects())
    def check(intent):
        answer = client.post("/stripe/decide", json=intent, headers={"X-Api-Key": "key"})
        assert answer.status_code in (200, 422), answer.text
        if answer.status_code == 422:
            assert NAMES_A_FIELD.match(answer.json()["detail"]), answer.text

    with TestClient(create_app(stripe_settings)) as client:
        check()


def test_signed_webhooks_are_taken_or_refused_never_failed(stripe_settings):
    @EXAMPLES
    @given(stripe_events() | JSON_VALUE)
    def check(event):
        body = json.dumps(event).encode()
        answer = client.post("/stripe/webhook", content=body,
                             headers={"Stripe-Signature": sign(body)})  # fmt: skip
        assert answer.status_code in (200, 400), answer.text
        if answer.status_code == 400:
            assert answer.json()["detail"].startswith("body is not a Stripe event: event")

    with TestClient(create_app(stripe_settings)) as client:
        check()


def test_stripe_events_are_taken_or_rejected_naming_the_field(stripe_settings):
    producer = AckingProducer(make_producer(stripe_settings))
    consumer = StripeConsumer(stripe_settings, producer)
    topic = stripe_settings.topic_stripe_events
    outcomes: set[str] = set()

    @EXAMPLES
    @given(stripe_events())
    def check(event):
        msg = Message(topic=topic, value=json.dumps(event).encode())
        try:
            outcomes.add(consumer.handle(msg))
        except Rejected as err:  # the consumer loop sends it to the DLQ with this reason
            assert NAMES_A_FIELD.match(str(err)), str(err)
            outcomes.add("rejected")

    try:
        check()
    finally:
        consumer.close()
        producer.close()
    assert {"transaction", "label", "rejected"} <= outcomes
