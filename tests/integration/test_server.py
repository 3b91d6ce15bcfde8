"""The gRPC server in-process against the real Kafka and Postgres: ingestion acknowledged
after the broker has the message, inline scores persisted, labels, validation errors,
health, reflection and TLS (certificates from tests.helpers.tls)."""

from __future__ import annotations

import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from fraudops.grpc_client import with_token
from fraudops.proto_gen.fraud.v1 import fraud_pb2, fraud_pb2_grpc
from tests.helpers.serving_env import (
    channel_to,
    consume,
    issue_token,
    make_settings,
    publish_model,
    query,
    running_app,
    scored_ids,
    transaction,
    unique_ids,
    wait_serving,
    wait_until,
)
from tests.helpers.tls import tls_files


def test_send_transaction_acknowledges_what_kafka_holds(app, channel):
    stub = fraud_pb2_grpc.FraudIngestionStub(channel)
    ids = unique_ids("send", 6)
    sent = {i: transaction(n, user_id=40 + n % 3, transaction_id=i) for n, i in enumerate(ids)}
    acks = {i: stub.SendTransaction(tx, timeout=30) for i, tx in sent.items()}
    assert all(a.transaction_id == i and a.offset >= 0 for i, a in acks.items())
    messages = consume(app.settings, app.settings.topic_raw, len(ids))
    assert len(messages) == len(ids)
    for msg in messages:
        tx = fraud_pb2.TransactionRequest.FromString(msg.value())
        assert tx == sent[tx.transaction_id]
        assert msg.key() == str(tx.user_id).encode()
        assert (msg.partition(), msg.offset()) == (
            acks[tx.transaction_id].partition,
            acks[tx.transaction_id].offset,
        )


def test_inline_scores_answer_and_are_persisted_once(app, channel):
    stub = fraud_pb2_grpc.FraudScoringStub(channel)
    ids = unique_ids("inline", 21)
    one = stub.Score(transaction(0, transaction_id=ids[0]), timeout=10)
    assert (one.transaction_id, one.model_version) == (ids[0], "v1")
    assert one.band in (fraud_pb2.ALLOW, fraud_pb2.CHALLENGE, fraud_pb2.BLOCK)
    batch = fraud_pb2.ScoreBatchRequest(
        transactions=[transaction(n, transaction_id=i) for n, i in enumerate(ids[1:], 1)]
    )
    many = stub.ScoreBatch(batch, timeout=10).scores
    assert [s.transaction_id for s in many] == ids[1:]
    url = app.settings.database_url
    wait_until(lambda: len(scored_ids(url, ids)) == len(ids), "inline scores in Postgres")
    stub.ScoreBatch(batch, timeout=10)  # scored again: the stored row stays the first one
    app.inline.sink.flush()
    rows = query(
        url,
        "SELECT transaction_id, source, model_version, score FROM scored_transactions "
        "WHERE transaction_id = ANY(%s)",
        (ids,),
    )
    assert sorted(r[0] for r in rows) == sorted(ids)
    assert {(r[1], r[2]) for r in rows} == {("inline", "v1")}
    stored = {r[0]: r[3] for r in rows}
    assert stored[ids[0]] == pytest.approx(one.score)
    assert [stored[s.transaction_id] for s in many] == pytest.approx([s.score for s in many])


INVALID = [
    ({"amount": float("nan")}, "amount"),
    ({"amount": float("inf")}, "amount"),
    ({"amount": -1.0}, "amount"),
    ({"type": "WIRE"}, "type"),
    ({"transaction_id": ""}, "transaction_id"),
    ({"transaction_id": "x" * 500}, "transaction_id"),
    ({"user_id": 0}, "user_id"),
    ({"channel": "c" * 1000}, "channel"),
    ({"channel": "a\x00b"}, "channel"),
    ({"transaction_id": "a\x00b"}, "transaction_id"),
    ({"timestamp": 2**63 - 1}, "timestamp"),
    ({"ip_address": "300.1.2.3"}, "ip_address"),
    ({"ip_address": "fe80::1%eth0"}, "ip_address"),
    ({"card_country": "Germany"}, "card_country"),
    ({"billing_country": "de"}, "billing_country"),
]


@pytest.mark.parametrize(("fields", "field"), INVALID)
def test_invalid_input_is_rejected_naming_the_field(channel, fields, field):
    scoring = fraud_pb2_grpc.FraudScoringStub(channel)
    ingestion = fraud_pb2_grpc.FraudIngestionStub(channel)
    bad = transaction(3, **fields)
    for call in (scoring.Score, ingestion.SendTransaction):
        with pytest.raises(grpc.RpcError) as err:
            call(bad, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith(f"{field}:")
    batch = fraud_pb2.ScoreBatchRequest(transactions=[transaction(1), bad])
    with pytest.raises(grpc.RpcError) as err:
        scoring.ScoreBatch(batch, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"transactions[1].{field}:")
    assert scoring.Score(transaction(4), timeout=10).model_version == "v1"  # still up


def test_strings_that_are_not_utf8_are_rejected_naming_the_field(channel):
    """Raw wire bytes (a client not built on protobuf), each replacement as long as what it
    replaces; grpc itself would answer INTERNAL."""
    tx = transaction(3, transaction_id="tx-\u00e9", channel="web").SerializeToString()
    batch = fraud_pb2.ScoreBatchRequest(transactions=[transaction(1), transaction(2)])
    label = fraud_pb2.LabelRequest(transaction_id="tx-1", label=fraud_pb2.FRAUD, source="a:b")
    cases = [
        ("FraudScoring/Score", tx.replace(b"web", b"w\xffb"), "channel"),
        ("FraudIngestion/SendTransaction", tx.replace(b"\xc3\xa9", b"\xc3("), "transaction_id"),
        ("FraudScoring/ScoreBatch", batch.SerializeToString().replace(b"tx-2", b"tx-\xfe"),
         "transactions[1].transaction_id"),
        ("Feedback/SubmitLabel", label.SerializeToString().replace(b"a:b", b"a:\x80"), "source"),
        ("FraudScoring/Score", b"\xff\xff\xff not protobuf", "message"),
    ]  # fmt: skip
    for method, payload, field in cases:
        with pytest.raises(grpc.RpcError) as err:
            channel.unary_unary(f"/fraud.v1.{method}")(payload, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
        assert err.value.details().startswith(f"{field}: "), err.value.details()
    scoring = fraud_pb2_grpc.FraudScoringStub(channel)
    assert scoring.Score(transaction(4), timeout=10).model_version == "v1"  # still up


def test_labels_are_recorded_superseded_and_checked(app, channel):
    tx_id = unique_ids("label", 1)[0]
    fraud_pb2_grpc.FraudScoringStub(channel).Score(transaction(5, transaction_id=tx_id))
    feedback = fraud_pb2_grpc.FeedbackStub(channel)
    first = feedback.SubmitLabel(
        fraud_pb2.LabelRequest(transaction_id=tx_id, label=fraud_pb2.FRAUD, source="test:desk")
    )
    assert (first.label, first.superseded_previous) == (fraud_pb2.FRAUD, False)
    second = feedback.SubmitLabel(
        fraud_pb2.LabelRequest(
            transaction_id=tx_id, label=fraud_pb2.LEGIT, source="chargeback:visa"
        )
    )
    assert (second.label, second.superseded_previous) == (fraud_pb2.LEGIT, True)
    rows = query(
        app.settings.database_url,
        "SELECT label, supersedes FROM feedback_labels WHERE transaction_id = %s",
        (tx_id,),
    )
    assert rows == [("LEGIT", "FRAUD")]
    source = "test:a"
    cases = [
        (dict(transaction_id="never-scored", label=fraud_pb2.FRAUD, source=source), "NOT_FOUND"),
        (dict(transaction_id=tx_id, label=fraud_pb2.LABEL_UNSPECIFIED, source=source), "label"),
        (dict(transaction_id=tx_id, label=fraud_pb2.FRAUD, source=""), "source"),
        (dict(transaction_id="a\x00b", label=fraud_pb2.FRAUD, source=source), "transaction_id"),
        (dict(transaction_id=tx_id, label=fraud_pb2.FRAUD, source=source, note="\x00"), "note"),
    ]
    for fields, expected in cases:
        with pytest.raises(grpc.RpcError) as err:
            feedback.SubmitLabel(fraud_pb2.LabelRequest(**fields), timeout=10)
        if expected == "NOT_FOUND":
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
        else:
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details().startswith(f"{expected}:")


def test_health_and_reflection_answer(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "fraud.v1.FraudScoring", "fraud.v1.FraudIngestion", "fraud.v1.Feedback"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {"fraud.v1.FraudScoring", "fraud.v1.FraudIngestion", "fraud.v1.Feedback"} <= services
    assert "grpc.health.v1.Health" in services
    pool_db = ProtoReflectionDescriptorDatabase(channel)
    score = pool_db.FindFileContainingSymbol("fraud.v1.FraudScoring")
    assert "fraud.v1" in score.package


def test_without_a_model_the_server_is_not_serving_until_one_lands(
    built_models, serving_root, database_url, client_token
):
    settings = make_settings(model_dir=serving_root, database_url=database_url)
    with running_app(settings) as server, channel_to(server.port, client_token) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as err:
            fraud_pb2_grpc.FraudScoringStub(ch).Score(transaction(1), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        publish_model(built_models, serving_root, "v2")
        wait_serving(ch, timeout=30)
        assert fraud_pb2_grpc.FraudScoringStub(ch).Score(transaction(1)).model_version == "v2"


@pytest.mark.parametrize("mutual", [False, True])
def test_tls_and_mutual_tls(built_models, serving_root, tmp_path, database_url, client_token,
                            mutual):  # fmt: skip
    """With mutual TLS the certificate's subject is the caller; without, the token is."""
    publish_model(built_models, serving_root, "v1")
    client_name = f"tls-{uuid.uuid4().hex[:8]}"
    if mutual:
        issue_token(database_url, client_name, scopes=["score"], sources=[])
    ca_pem, server_key, server_pem, client_key, client_pem = tls_files(tmp_path, client_name)
    settings = make_settings(
        database_url=database_url,
        model_dir=serving_root,
        tls_cert=server_pem,
        tls_key=server_key,
        tls_ca=ca_pem if mutual else None,
    )
    with running_app(settings) as server:
        target = f"127.0.0.1:{server.port}"
        with_client = grpc.ssl_channel_credentials(
            ca_pem.read_bytes(), client_key.read_bytes(), client_pem.read_bytes()
        )
        with grpc.secure_channel(target, with_client) as plain:
            ch = plain if mutual else with_token(plain, client_token)
            reply = fraud_pb2_grpc.FraudScoringStub(ch).Score(transaction(1), timeout=30)
            assert reply.model_version == "v1"
        refused = [grpc.insecure_channel(target)]
        if mutual:  # a client that trusts the server but shows no certificate
            refused.append(
                grpc.secure_channel(target, grpc.ssl_channel_credentials(ca_pem.read_bytes()))
            )
        for ch in refused:
            with ch, pytest.raises(grpc.RpcError) as err:
                fraud_pb2_grpc.FraudScoringStub(ch).Score(transaction(1), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
