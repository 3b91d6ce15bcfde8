"""Concurrent Score calls scored in one batch (serving.batching) on the real server, with
Postgres and Kafka: the same answers, bit for bit, as ScoreBatch; and a call whose deadline
passes while it waits is answered DEADLINE_EXCEEDED and never scored, recorded or stored.

A batch is held inside scoring (the batcher's scoring function waits on an event) so that
calls gather behind it: what the tests check does not depend on timing."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from fraudops.proto_gen.fraud.v1 import fraud_pb2, fraud_pb2_grpc
from serving import metrics
from serving.server import ServingApp
from tests.helpers.serving_env import (
    scored_ids,
    transaction,
    unique_ids,
    wait_until,
)


@pytest.fixture
def stub(channel):
    return fraud_pb2_grpc.FraudScoringStub(channel)


class Hold:
    """Holds every batch inside scoring until `release()`; `entered` is set by the first."""

    def __init__(self, app: ServingApp):
        self.entered, self._gate = threading.Event(), threading.Event()
        self._app, self._score = app, app.batcher._score
        app.batcher._score = self._held

    def _held(self, txs, started_ns):
        self.entered.set()
        self._gate.wait(60)
        return self._score(txs, started_ns)

    def waiting(self) -> int:
        return len(self._app.batcher._waiting)

    def release(self) -> None:
        self._gate.set()


def sample(name: str) -> float:
    return metrics.REGISTRY.get_sample_value(name) or 0.0


def test_calls_that_wait_together_are_one_batch_scored_as_score_batch_scores(app, stub):
    ids = unique_ids("batched", 12)
    txs = [transaction(n, user_id=7000 + n, transaction_id=i) for n, i in enumerate(ids)]
    batches, calls = (sample(f"fraudops_inline_batch_size_{k}") for k in ("count", "sum"))
    hold = Hold(app)
    with ThreadPoolExecutor(len(txs)) as pool:
        first = pool.submit(stub.Score, txs[0], timeout=60)
        assert hold.entered.wait(30)
        rest = [pool.submit(stub.Score, tx, timeout=60) for tx in txs[1:]]
        wait_until(lambda: hold.waiting() == len(rest), "the calls to wait behind the batch")
        hold.release()
        answers = [first.result(), *(f.result() for f in rest)]
    # One batch of the first call alone, then one of the eleven that waited together.
    assert sample("fraudops_inline_batch_size_count") - batches == 2
    assert sample("fraudops_inline_batch_size_sum") - calls == len(txs)
    # ScoreBatch of the same transactions: repeats, so the same velocity features; the
    # answers must be the same bits whatever batch each transaction was scored in.
    again = stub.ScoreBatch(fraud_pb2.ScoreBatchRequest(transactions=txs), timeout=30).scores
    assert [a.transaction_id for a in answers] == ids == [a.transaction_id for a in again]
    for one, other in zip(answers, again, strict=True):
        assert one.score.hex() == other.score.hex()
        assert (one.band, list(one.reasons), one.model_version) == (
            other.band, list(other.reasons), other.model_version
        )  # fmt: skip
    app.inline.sink.flush()
    assert sorted(scored_ids(app.settings.database_url, ids)) == sorted(ids)


def test_a_call_whose_deadline_passes_while_it_waits_is_never_scored(app, stub):
    ahead_id, late_id = unique_ids("deadline", 2)
    ahead = transaction(1, user_id=7100, transaction_id=ahead_id)
    late = transaction(2, user_id=7101, transaction_id=late_id)
    expired = sample("fraudops_inline_expired_total")
    hold = Hold(app)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(stub.Score, ahead, timeout=60)
        assert hold.entered.wait(30)
        with pytest.raises(grpc.RpcError) as err:
            stub.Score(late, timeout=0.5)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert hold.waiting() == 1  # still waiting server-side when its client gave up
        hold.release()
        assert first.result().transaction_id == ahead_id
    wait_until(lambda: sample("fraudops_inline_expired_total") == expired + 1,
               "the server to answer the late call unscored")  # fmt: skip
    features = app.inline.core.features
    assert [event[0] for event in features.history(7101)] == []
    assert [event[0] for event in features.history(7100)] == [ahead_id]
    app.inline.sink.flush()
    assert scored_ids(app.settings.database_url, [ahead_id, late_id]) == [ahead_id]
    # Retried in time, it is scored (and counted) once, as a new transaction.
    assert stub.Score(late, timeout=30).transaction_id == late_id
    assert [event[0] for event in features.history(7101)] == [late_id]
