"""Who may call the gRPC server: a server in-process on the real Kafka and Postgres, callers
issued and revoked through serving.callers as `fraudops-clients` does. Every refused call
gets its status naming what is missing, stores nothing, and is counted; the same call with
the right identity succeeds. (A forged analyst's label over Kafka: tests/integration/
test_labels.py.)"""

from __future__ import annotations

import uuid

import grpc
import pytest

from fraudops.db import connect
from fraudops.grpc_client import with_token
from fraudops.proto_gen.fraud.v1 import fraud_pb2, fraud_pb2_grpc
from serving import metrics
from serving.callers import list_callers, revoke_caller
from testkit.stack import loopback_settings
from tests.helpers.serving_env import (
    channel_to,
    consume,
    issue_token,
    query,
    running_app,
    scored_ids,
    transaction,
    unique_ids,
    wait_serving,
    wait_until,
)
from tests.helpers.tls import tls_files

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture
def settings(v1_settings, database_url):
    return v1_settings("test-auth", database_url=database_url, caller_refresh_s=0.2)


@pytest.fixture
def app(settings):
    with running_app(settings) as app:
        yield app


def caller_name() -> str:
    return f"caller-{uuid.uuid4().hex[:8]}"


def refusal(call, request, token: str | None, port: int) -> grpc.RpcError:
    with channel_to(port, token) as ch, pytest.raises(grpc.RpcError) as err:
        call(ch)(request, timeout=10)
    return err.value


def score(ch):
    return fraud_pb2_grpc.FraudScoringStub(ch).Score


def send(ch):
    return fraud_pb2_grpc.FraudIngestionStub(ch).SendTransaction


def submit(ch):
    return fraud_pb2_grpc.FeedbackStub(ch).SubmitLabel


def refused_count(rpc: str, code: grpc.StatusCode) -> float:
    labels = {"rpc": rpc, "code": code.name}
    return metrics.REGISTRY.get_sample_value("fraudops_auth_refused_total", labels) or 0.0


def label_rows(url: str, tx_id: str) -> list[tuple]:
    return query(url, "SELECT label, source FROM feedback_labels WHERE transaction_id = %s",
                 (tx_id,))  # fmt: skip


def test_a_call_without_credentials_is_refused_and_stores_nothing(app, client_token):
    s = app.settings
    tx = transaction(1, transaction_id=unique_ids("anon", 1)[0])
    before = refused_count("Score", UNAUTHENTICATED)
    for call in (score, send):
        err = refusal(call, tx, None, app.port)
        assert err.code() == UNAUTHENTICATED
        assert "no credentials" in err.details() and "authorization" in err.details()
    assert refused_count("Score", UNAUTHENTICATED) == before + 1
    for bad in ("Basic abc", "Bearer", f"Bearer {client_token}x"):
        metadata = (("authorization", bad),)
        with channel_to(app.port) as ch, pytest.raises(grpc.RpcError) as err:
            score(ch)(tx, metadata=metadata, timeout=10)
        assert err.value.code() == UNAUTHENTICATED
        assert err.value.details().startswith("authorization:"), err.value.details()
    app.inline.sink.flush()
    assert scored_ids(s.database_url, [tx.transaction_id]) == []
    assert consume(s, s.topic_raw, expected=0, timeout=5) == []
    with channel_to(app.port, client_token) as ch:  # the same call, with an identity
        assert score(ch)(tx, timeout=10).model_version == "v1"


def test_a_revoked_token_is_refused_within_the_refresh_interval(app):
    s, name = app.settings, caller_name()
    token = issue_token(s.database_url, name, scopes=["score"], sources=[])
    with channel_to(app.port, token) as ch:
        wait_until(lambda: _answers(ch), "the new caller to be loaded", 30)
        conn = connect(s.database_url)
        try:
            assert revoke_caller(conn, name)
            revoked_at = {r[0]: r[4] for r in list_callers(conn)}[name]
        finally:
            conn.close()
        wait_until(lambda: not _answers(ch), "the revoke to bite", 30)
    assert revoked_at is not None
    audit = query(s.database_url, "SELECT kind FROM audit_log WHERE subject = %s ORDER BY id",
                  (name,))  # fmt: skip
    assert [a[0] for a in audit] == ["caller_added", "caller_revoked"]
    tx = transaction(2, transaction_id=unique_ids("revoked", 1)[0])
    err = refusal(score, tx, token, app.port)
    assert err.code() == UNAUTHENTICATED
    assert err.details() == "authorization: unknown or revoked token"
    app.inline.sink.flush()
    assert scored_ids(s.database_url, [tx.transaction_id]) == []


def _answers(channel) -> bool:
    """Whether a Score call on `channel` is answered (False: refused as unauthenticated)."""
    tx = transaction(2, transaction_id=unique_ids("probe", 1)[0])
    try:
        score(channel)(tx, timeout=10)
    except grpc.RpcError as err:
        assert err.code() == UNAUTHENTICATED, err.details()
        return False
    return True


def test_a_caller_without_the_scope_is_refused_naming_it(settings):
    name = caller_name()
    token = issue_token(settings.database_url, name, scopes=["score"], sources=[])
    with running_app(settings) as app:  # loads the callers as it starts
        tx = transaction(3, transaction_id=unique_ids("scope", 1)[0])
        before = refused_count("SendTransaction", PERMISSION_DENIED)
        err = refusal(send, tx, token, app.port)
        assert err.code() == PERMISSION_DENIED
        assert err.details() == f"caller {name!r} lacks scope 'ingest' for SendTransaction"
        assert refused_count("SendTransaction", PERMISSION_DENIED) == before + 1
        label = fraud_pb2.LabelRequest(transaction_id=tx.transaction_id, label=fraud_pb2.FRAUD,
                                       source="chargeback:visa")  # fmt: skip
        assert "lacks scope 'label'" in refusal(submit, label, token, app.port).details()
        s = app.settings
        assert consume(s, s.topic_raw, expected=0, timeout=5) == []
        with channel_to(app.port, token) as ch:
            assert score(ch)(tx, timeout=10).transaction_id == tx.transaction_id


def test_a_label_source_the_caller_may_not_use_is_refused(settings):
    token = issue_token(settings.database_url, caller_name(), scopes=["score", "label"],
                        sources=["chargeback:*"])  # fmt: skip
    with running_app(settings) as app:
        tx_id = unique_ids("forged", 1)[0]
        with channel_to(app.port, token) as ch:
            score(ch)(transaction(4, transaction_id=tx_id), timeout=10)
        url = app.settings.database_url
        wait_until(lambda: scored_ids(url, [tx_id]), "the inline score stored")
        refusals = {"analyst:demo-analyst": "reserved for the console",
                    "stripe:dispute": "may not write labels from 'stripe:dispute'"}  # fmt: skip
        for source, says in refusals.items():
            forged = fraud_pb2.LabelRequest(transaction_id=tx_id, label=fraud_pb2.LEGIT,
                                            source=source)  # fmt: skip
            err = refusal(submit, forged, token, app.port)
            assert err.code() == PERMISSION_DENIED
            assert err.details().startswith("source: ") and says in err.details()
        assert label_rows(url, tx_id) == []
        allowed = fraud_pb2.LabelRequest(transaction_id=tx_id, label=fraud_pb2.FRAUD,
                                         source="chargeback:visa")  # fmt: skip
        with channel_to(app.port, token) as ch:
            assert submit(ch)(allowed, timeout=10).label == fraud_pb2.FRAUD
        assert label_rows(url, tx_id) == [("FRAUD", "chargeback:visa")]


def test_anonymous_methods_are_an_operator_choice(settings):
    with running_app(loopback_settings(settings, grpc_anonymous_methods="Score")) as app:
        tx = transaction(5, transaction_id=unique_ids("open", 1)[0])
        with channel_to(app.port) as ch:
            assert score(ch)(tx, timeout=10).model_version == "v1"
        assert refusal(send, tx, None, app.port).code() == UNAUTHENTICATED


def test_a_client_certificate_whose_subject_is_not_a_caller_is_refused(settings, tmp_path):
    known = caller_name()
    issue_token(settings.database_url, known, scopes=["score"], sources=[])
    for subject, accepted in ((caller_name(), False), (known, True)):
        ca, key, cert, client_key, client_cert = tls_files(tmp_path / subject, subject)
        tls = loopback_settings(settings, tls_cert=cert, tls_key=key, tls_ca=ca)  # fmt: skip
        tx = transaction(6, transaction_id=unique_ids("mtls", 1)[0])
        with running_app(tls) as app:
            credentials = grpc.ssl_channel_credentials(
                ca.read_bytes(), client_key.read_bytes(), client_cert.read_bytes()
            )
            with grpc.secure_channel(f"127.0.0.1:{app.port}", credentials) as ch:
                wait_serving(ch)
                if accepted:
                    assert score(ch)(tx, timeout=10).model_version == "v1"
                    continue
                with pytest.raises(grpc.RpcError) as err:
                    score(ch)(tx, timeout=10)
                assert err.value.code() == UNAUTHENTICATED
                assert err.value.details() == (
                    f"client certificate: CN={subject!r} is not a known caller"
                )
        stored = scored_ids(settings.database_url, [tx.transaction_id])
        assert stored == ([tx.transaction_id] if accepted else [])


def test_with_token_sends_the_token_on_every_call(app, client_token):
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as plain:
        ch = with_token(plain, client_token)
        tx = transaction(7, transaction_id=unique_ids("helper", 1)[0])
        assert score(ch)(tx, timeout=10).transaction_id == tx.transaction_id
