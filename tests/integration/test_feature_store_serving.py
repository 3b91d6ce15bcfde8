"""The shared feature state through the real serving paths: a server restarted midway
scores one user's sequence exactly like an uninterrupted one; with Redis gone or hung the
inline server still answers, marked and counted; the Kafka scorer holds its batch while
Redis is down and completes when it is back, nothing lost and nothing counted twice."""

from __future__ import annotations

import numpy as np
import pytest

from fraudops.proto_gen.fraud.v1 import fraud_pb2_grpc
from serving import metrics
from serving.feature_state import RedisFeatures
from serving.model_store import ModelStore
from serving.scoring import NO_HISTORY_REASON, ScoringCore, decode
from tests.helpers.serving_env import (
    channel_to,
    consume,
    make_settings,
    publish_model,
    query,
    running_app,
    scored_ids,
    service_process,
    transaction,
    unique_ids,
    wait_serving,
    wait_until,
)
from tests.integration.test_scorer import produce_raw

pytestmark = pytest.mark.slow


def one_users_transfers(n: int, user_id: int = 4242) -> list:
    """`n` transfers of one user a minute apart, the same each time: only the user's
    history (and the hour) tells them apart."""
    ids = unique_ids("seq", n)
    return [
        transaction(i, user_id=user_id, transaction_id=ids[i], timestamp=1_700_000_000 + 60 * i,
                    type="TRANSFER", amount=900.0)
        for i in range(n)
    ]  # fmt: skip


def score_over_grpc(port: int, token: str, requests: list) -> list:
    with channel_to(port, token) as ch:
        wait_serving(ch)
        stub = fraud_pb2_grpc.FraudScoringStub(ch)
        return [stub.Score(r, timeout=10) for r in requests]


def test_a_restarted_server_scores_like_an_uninterrupted_one(
    built_models, serving_root, redis_servers, tmp_path, database_url, client_token
):
    publish_model(built_models, serving_root, "v1")
    requests = one_users_transfers(31)

    def server(redis_url: str, log: str):
        settings = make_settings(
            model_dir=serving_root, redis_url=redis_url, database_url=database_url
        )
        return settings.grpc_port, service_process("serving.server", settings, tmp_path / log)

    port, proc = server(redis_servers().url, "uninterrupted.log")
    with proc:
        uninterrupted = [r.score for r in score_over_grpc(port, client_token, requests)]
    restarted_redis = redis_servers().url
    port, proc = server(restarted_redis, "first.log")
    with proc:
        restarted = [r.score for r in score_over_grpc(port, client_token, requests[:15])]
    port, proc = server(restarted_redis, "second.log")
    with proc:
        restarted += [r.score for r in score_over_grpc(port, client_token, requests[15:])]
    assert len(set(uninterrupted)) > 1  # the history moves the score: the test can fail
    assert restarted == uninterrupted


@pytest.fixture
def app(v1_settings, redis_server, database_url, client_token):
    settings = v1_settings("test-feature-store", redis_url=redis_server.url,
                           database_url=database_url, client_token=client_token)  # fmt: skip
    with running_app(settings, 8, grace=2) as app:
        yield app


def _without_history_count() -> float:
    return metrics.REGISTRY.get_sample_value("fraudops_scored_without_history_total") or 0.0


def test_inline_answers_without_history_while_redis_is_gone_or_hung(app, redis_server):
    requests = one_users_transfers(12)
    with channel_to(app.port, app.settings.client_token) as ch:
        wait_serving(ch)
        stub = fraud_pb2_grpc.FraudScoringStub(ch)

        def score(r):
            return stub.Score(r, timeout=5)  # the call succeeds within its deadline

        before = _without_history_count()
        assert all(NO_HISTORY_REASON not in score(r).reasons for r in requests[:4])
        redis_server.stop()
        gone = [score(r) for r in requests[4:7]]
        redis_server.start()
        wait_until(lambda: NO_HISTORY_REASON not in score(requests[7]).reasons, "Redis back")
        redis_server.freeze()
        try:
            hung = [score(r) for r in requests[8:10]]
        finally:
            redis_server.thaw()
        assert all(r.reasons[0] == NO_HISTORY_REASON for r in gone + hung)
        assert _without_history_count() - before >= len(gone) + len(hung)
    # Refused connections recorded nothing (a call to a hung Redis may still land when it
    # wakes: that transaction is then in the history, counted once); the rest once each.
    state = RedisFeatures.from_url(redis_server.url)
    recorded = [tx_id for tx_id, _, _ in state.history(4242)]
    assert {r.transaction_id for r in requests[:4]} <= set(recorded)
    assert not set(recorded) & {r.transaction_id for r in gone}
    assert len(recorded) == len(set(recorded))


def expected_scores(serving_root, redis_url: str, requests: list) -> dict[str, float]:
    """What an uninterrupted scorer gives: the same model and a state of its own."""
    store = ModelStore(serving_root, prewarm=1)
    store.load_latest()
    core = ScoringCore(store, RedisFeatures.from_url(redis_url))
    batch = core.score([decode(r) for r in requests])
    return dict(zip([r.transaction_id for r in requests], batch.scores.tolist(), strict=True))


def test_the_scorer_holds_while_redis_is_down_and_completes(
    stream_settings, redis_server, redis_servers, serving_root, tmp_path
):
    ids = unique_ids("outage", 120)
    requests = [transaction(i, user_id=500 + i % 6, transaction_id=tx) for i, tx in enumerate(ids)]
    messages = [(str(r.user_id).encode(), r.SerializeToString()) for r in requests]
    url, log = stream_settings.database_url, tmp_path / "scorer.log"
    with service_process("serving.scorer", stream_settings, log):
        produce_raw(stream_settings, messages[:60])
        wait_until(lambda: len(scored_ids(url, ids[:60])) == 60, "the first half scored", 120)
        redis_server.stop()
        produce_raw(stream_settings, messages[60:])
        wait_until(lambda: "feature store unavailable" in log.read_text(), "the scorer to hold")
        assert scored_ids(url, ids[60:]) == []
        redis_server.start()
        wait_until(lambda: len(scored_ids(url, ids)) >= 120, "every transaction scored", 120)
    assert sorted(scored_ids(url, ids)) == sorted(ids)  # none lost, none written twice
    on_kafka = consume(stream_settings, stream_settings.topic_scores, 120)
    assert len(on_kafka) == 120
    state = RedisFeatures.from_url(redis_server.url)
    recorded = [tx_id for user in range(500, 506) for tx_id, _, _ in state.history(user)]
    assert sorted(recorded) == sorted(ids)  # every transaction in the history exactly once
    rows = query(url, "SELECT transaction_id, score FROM scored_transactions "
                      "WHERE transaction_id = ANY(%s)", (ids,))  # fmt: skip
    expected = expected_scores(serving_root, redis_servers().url, requests)
    got = dict(rows)
    np.testing.assert_allclose([got[i] for i in ids], [expected[i] for i in ids], rtol=1e-6)
