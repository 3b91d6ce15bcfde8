"""Property: the validators are exactly the edge the stores need. Every TransactionRequest
or LabelRequest the validator accepts is stored by the real writers (scored_transactions,
feedback_labels) and carried by Kafka, and reads back equal; every one it rejects is
answered INVALID_ARGUMENT by the real gRPC server, naming the field the validator named.

Examples start valid and have up to two fields replaced by hostile values (NUL and other
control characters, any Unicode, int64 and float extremes), so both sides are exercised."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
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
from serving.labels import LabelError, label_name, validate_label
from serving.model_store import ModelStore
from serving.persistence import ScoreWriter
from serving.scoring import ScoringCore
from serving.server import ServingApp
from tests.helpers.serving_env import (
    channel_to,
    consume,
    insert_scored,
    make_settings,
    publish_model,
    query,
    wait_serving,
)
from tests.helpers.stack import fresh_database

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
    "source": st.sampled_from(["analyst:alice", "chargeback:visa"]),
    "note": st.sampled_from(["", "card reported stolen", "refund confirmed"]),
}
HOSTILE_LABEL = {
    "transaction_id": ANY_TEXT,
    "label": st.integers(-(2**31), 2**31 - 1),
    "source": ANY_TEXT,
    "note": ANY_TEXT | st.text(min_size=500, max_size=600),
}


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
def app(built_models, serving_root, kafka_settings, kafka_topics, property_database):
    publish_model(built_models, serving_root, "v1")
    settings = make_settings(
        **kafka_settings.kafka_login(),
        database_url=property_database,
        model_dir=serving_root,
        **kafka_topics(),
    )
    server = ServingApp(settings, max_workers=4)
    server.start()
    yield server
    server.stop(grace=1)


@pytest.fixture
def channel(app):
    with channel_to(app.port) as ch:
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
