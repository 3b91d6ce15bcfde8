"""Scoring across processes, all sharing one real Redis: the inline server and the Kafka
scorer count each other's transactions; two scorers in one group, one SIGKILLed mid-stream,
give every transaction the batch transform's features and count none twice; a server run
as two worker processes on one port gives a transaction the same score from either worker
and across a restart, and stops as a whole when a worker dies; the dev stack starts scorer
replicas in one consumer group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from dataclasses import replace

import grpc
import numpy as np
import pytest

from fraudops.features import FEATURE_NAMES, batch_features
from fraudops.grpc_client import with_token
from fraudops.proto_gen.fraud.v1 import fraud_pb2, fraud_pb2_grpc
from serving.feature_state import RedisFeatures
from serving.server import WORKER_METADATA_KEY
from testkit.stack import port_open, wait_for_members
from testkit.transactions import make_transactions
from tests.helpers.serving_env import (
    ROOT,
    free_port,
    process_env,
    query,
    scored_ids,
    service_process,
    stop_process,
    transaction,
    unique_ids,
    wait_serving,
    wait_until,
)
from tests.integration.test_feature_state import TOLERANCE
from tests.integration.test_feature_store_serving import expected_scores, one_users_transfers
from tests.integration.test_scorer import produce_raw

pytestmark = pytest.mark.slow


def fresh_channel(port: int) -> grpc.Channel:
    """A channel with a connection of its own (no subchannel shared with other channels),
    so each one is a new TCP connection the kernel hands to one of the workers."""
    return grpc.insecure_channel(f"127.0.0.1:{port}", [("grpc.use_local_subchannel_pool", 1)])


def score_with_worker(settings, request) -> tuple[float, str]:
    with fresh_channel(settings.grpc_port) as plain:
        stub = fraud_pb2_grpc.FraudScoringStub(with_token(plain, settings.client_token))
        reply, call = stub.Score.with_call(request, timeout=10)
    return reply.score, dict(call.trailing_metadata())[WORKER_METADATA_KEY]


def stored_scores(url: str, ids: list[str]) -> dict[str, float]:
    sql = "SELECT transaction_id, score FROM scored_transactions WHERE transaction_id = ANY(%s)"
    return dict(query(url, sql, (ids,)))


def test_inline_and_stream_count_each_others_transactions(
    stream_settings, redis_servers, serving_root, tmp_path
):
    """User A's first ten go through SendTransaction and the scorer, the eleventh through
    Score; user B's the other way round. Each last score is the one an uninterrupted single
    process gives over the user's whole sequence, not the one of a user never seen."""
    url = stream_settings.database_url
    a, b = one_users_transfers(11, user_id=71), one_users_transfers(11, user_id=72)
    server = service_process("serving.server", stream_settings, tmp_path / "server.log")
    scorer = service_process("serving.scorer", stream_settings, tmp_path / "scorer.log")
    with server, scorer, fresh_channel(stream_settings.grpc_port) as plain:
        wait_serving(plain, timeout=120)
        ch = with_token(plain, stream_settings.client_token)
        ingestion, scoring = (
            fraud_pb2_grpc.FraudIngestionStub(ch),
            fraud_pb2_grpc.FraudScoringStub(ch),
        )
        for r in a[:10]:
            ingestion.SendTransaction(r, timeout=30)
        a_ids = [r.transaction_id for r in a[:10]]
        wait_until(lambda: len(scored_ids(url, a_ids)) == 10, "A's ten scored by the scorer", 120)
        a_last = scoring.Score(a[10], timeout=10).score
        b_first = [scoring.Score(r, timeout=10).score for r in b[:10]]
        ingestion.SendTransaction(b[10], timeout=30)
        b_id = b[10].transaction_id
        wait_until(lambda: scored_ids(url, [b_id]) == [b_id], "B's last scored by the scorer", 120)
    for requests, last in ((a, a_last), (b, stored_scores(url, [b_id])[b_id])):
        expected = expected_scores(serving_root, redis_servers().url, requests)
        as_new = expected_scores(serving_root, redis_servers().url, requests[-1:])
        tx_id = requests[-1].transaction_id
        assert expected[tx_id] != pytest.approx(as_new[tx_id])  # history moves this score
        assert last == pytest.approx(expected[tx_id], rel=1e-6)
    expected_b = expected_scores(serving_root, redis_servers().url, b)
    assert b_first == pytest.approx([expected_b[r.transaction_id] for r in b[:10]], rel=1e-6)


def as_request(row: dict) -> fraud_pb2.TransactionRequest:
    return fraud_pb2.TransactionRequest(
        transaction_id=row["transaction_id"], user_id=int(row["user_id"]),
        amount=float(row["amount"]), timestamp=int(row["timestamp"]), type=row["type"],
        old_balance_orig=float(row["old_balance_orig"]),
        new_balance_orig=float(row["new_balance_orig"]),
        old_balance_dest=float(row["old_balance_dest"]),
        new_balance_dest=float(row["new_balance_dest"]),
        is_unauthorized_overdraft=float(row["is_unauthorized_overdraft"]),
        dest_id=int(row["dest_id"]),
    )  # fmt: skip


def test_two_scorers_one_killed_give_the_batch_features_and_count_nothing_twice(
    stream_settings, redis_server, tmp_path
):
    frame = make_transactions(2400, seed=8, days=2)
    run = uuid.uuid4().hex[:8]
    frame["transaction_id"] = [f"rebal-{run}-{i}" for i in range(len(frame))]
    rows = frame.to_dict("records")
    ids = [r["transaction_id"] for r in rows]
    messages = [(str(r["user_id"]).encode(), as_request(r).SerializeToString()) for r in rows]
    small = replace(stream_settings, scorer_batch_size=40)
    url = stream_settings.database_url
    half = len(messages) // 2
    survivor = service_process("serving.scorer", small, tmp_path / "scorer-b.log")
    with survivor, service_process("serving.scorer", small, tmp_path / "scorer-a.log") as doomed:
        wait_for_members(stream_settings, stream_settings.consumer_group, 2)
        produce_raw(stream_settings, messages[:half])
        wait_until(lambda: len(scored_ids(url, ids)) >= half // 2, "both mid-stream", 120)
        stop_process(doomed, signal.SIGKILL)
        assert len(scored_ids(url, ids)) < len(ids), "the kill should land mid-stream"
        produce_raw(stream_settings, messages[half:])
        wait_until(lambda: len(scored_ids(url, ids)) == len(ids), "every transaction", 240)
    stored = scored_ids(url, ids)
    assert len(stored) == len(set(stored)) == len(ids)
    state = RedisFeatures.from_url(redis_server.url, timeout=10)
    recorded = [tx for user in set(frame["user_id"].tolist()) for tx, _, _ in state.history(user)]
    assert sorted(recorded) == sorted(ids)  # in the shared history exactly once each
    # Asking again returns each transaction's first features and counts nothing new.
    got = state.transform_many(rows)
    expected = batch_features(frame)
    for i, name in enumerate(FEATURE_NAMES):
        np.testing.assert_allclose(got[:, i], expected[:, i], **TOLERANCE, err_msg=name)
    again = [tx for user in set(frame["user_id"].tolist()) for tx, _, _ in state.history(user)]
    assert sorted(again) == sorted(ids)


def test_two_server_workers_and_a_restart_give_one_transaction_one_score(
    stream_settings, redis_servers, serving_root, tmp_path
):
    metrics_port = free_port()
    settings = replace(stream_settings, server_workers=2, metrics_port=metrics_port)
    requests = one_users_transfers(12, user_id=73)
    expected = expected_scores(serving_root, redis_servers().url, requests)
    last = requests[-1]
    with service_process("serving.server", settings, tmp_path / "first.log") as proc:
        with fresh_channel(settings.grpc_port) as ch:
            wait_serving(ch, timeout=120)
        history = [score_with_worker(settings, r)[0] for r in requests[:-1]]
        by_worker: dict[str, list[float]] = {}
        for _ in range(64):  # new connections until both workers have answered
            score, worker = score_with_worker(settings, last)
            by_worker.setdefault(worker, []).append(score)
            if len(by_worker) == 2:
                break
        metrics_text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read()
        assert stop_process(proc) == 0
    assert len(by_worker) == 2 and str(proc.pid) not in by_worker
    assert history == pytest.approx([expected[r.transaction_id] for r in requests[:-1]], rel=1e-6)
    once = expected[last.transaction_id]
    assert all(s == pytest.approx(once, rel=1e-6) for s in sum(by_worker.values(), []))
    calls = len(history) + sum(len(v) for v in by_worker.values())
    assert scores_counted(metrics_text.decode()) == calls  # one endpoint sums the workers
    with service_process("serving.server", settings, tmp_path / "second.log"):
        with fresh_channel(settings.grpc_port) as ch:
            wait_serving(ch, timeout=120)
        assert score_with_worker(settings, last)[0] == pytest.approx(once, rel=1e-6)


def scores_counted(metrics_text: str) -> float:
    """The sum of fraudops_scores_total over bands and paths in a /metrics page."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith("fraudops_scores_total{")
    )


def test_several_workers_without_shared_state_are_refused(stream_settings, tmp_path):
    settings = replace(stream_settings, server_workers=2, redis_url=None)
    with service_process("serving.server", settings, tmp_path / "server.log") as proc:
        wait_until(lambda: proc.poll() is not None, "the server to refuse", 60)
    assert proc.returncode == 2
    assert "needs REDIS_URL" in (tmp_path / "server.log").read_text()


def test_the_supervisor_stops_when_a_worker_dies(stream_settings, tmp_path):
    settings = replace(stream_settings, server_workers=2)
    with service_process("serving.server", settings, tmp_path / "server.log") as proc:
        with fresh_channel(settings.grpc_port) as ch:
            wait_serving(ch, timeout=120)
        _, worker = score_with_worker(settings, one_users_transfers(1)[0])
        os.kill(int(worker), signal.SIGKILL)
        wait_until(lambda: proc.poll() is not None, "the supervisor to exit", 90)
    assert proc.returncode == 1
    assert not port_open("127.0.0.1", settings.grpc_port)  # the other worker stopped too
    assert f"worker pid {worker} exited" in (tmp_path / "server.log").read_text()


def test_the_dev_stack_starts_scorer_replicas_in_one_group(stream_settings, tmp_path):
    """`devstack up scorer` with two replicas against the shared broker: both join the
    group, the stream is scored once, and `down scorer` stops both."""
    metrics_port = free_port()
    settings = replace(stream_settings, scorer_replicas=2, metrics_port=metrics_port)
    command = [sys.executable, "-m", "devstack", "--run-dir", str(tmp_path / "run")]
    env = process_env(settings)

    def devstack(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*command, *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip

    ids = unique_ids("replicas", 200)
    requests = [transaction(i, user_id=600 + i % 9, transaction_id=t) for i, t in enumerate(ids)]
    try:
        assert devstack("up", "scorer").returncode == 0
        wait_for_members(settings, settings.consumer_group, 2)
        produce_raw(settings, [(str(r.user_id).encode(), r.SerializeToString()) for r in requests])
        url = settings.database_url
        wait_until(lambda: len(scored_ids(url, ids)) == len(ids), "every transaction", 120)
    finally:
        stopped = devstack("down", "scorer")
    assert stopped.returncode == 0, stopped.stderr
    assert not any(port_open("127.0.0.1", metrics_port + n) for n in (1, 2))
    assert sorted(scored_ids(settings.database_url, ids)) == sorted(ids)
