"""The Kafka broker restarted while callers send transactions over gRPC: a caller gets OK
only for a transaction on the topic, and otherwise UNAVAILABLE or DEADLINE_EXCEEDED. Sent
again after the restart (as a producer would), each transaction is on the topic at least
once, and the scorer stores each once."""

from __future__ import annotations

import collections
import itertools
import threading
import time
import uuid

import grpc
import pytest

from fraudops.proto_gen.fraud.v1 import fraud_pb2, fraud_pb2_grpc
from tests.faults.support import with_stack
from tests.helpers.serving_env import (
    channel_to,
    consume,
    running_app,
    scored_ids,
    service_process,
    serving_v1_settings,
    transaction,
    wait_serving,
    wait_until,
)

# Callers that give up before the server does (its wait for Kafka is 10 s) and after it.
DEADLINES_S = (2.0, 20.0)
CALLERS_PER_DEADLINE = 2
AFTER_RESTART = 200  # acknowledged sends after the broker is back before the callers stop


class Callers:
    """Threads sending SendTransaction in a loop; each outcome recorded by transaction id."""

    def __init__(self, port: int, token: str, run: str):
        self.outcomes: dict[str, str] = {}
        self._ids = (f"fault-kafka-{run}-{n}" for n in itertools.count())
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._port, self._token = port, token
        self._threads = [
            threading.Thread(target=self._run, args=(d,), daemon=True)
            for d in DEADLINES_S
            for _ in range(CALLERS_PER_DEADLINE)
        ]

    def start(self) -> Callers:
        for t in self._threads:
            t.start()
        return self

    def acked(self) -> int:
        return sum(o == "OK" for o in list(self.outcomes.values()))

    def _run(self, deadline: float) -> None:
        with channel_to(self._port, self._token) as ch:
            stub = fraud_pb2_grpc.FraudIngestionStub(ch)
            while not self._stop.is_set():
                with self._lock:
                    tx_id = next(self._ids)
                self.outcomes[tx_id] = send(stub, tx_id, deadline)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)


def send(stub, tx_id: str, deadline: float) -> str:
    n = int(tx_id.rsplit("-", 1)[1])
    try:
        stub.SendTransaction(transaction(n, transaction_id=tx_id), timeout=deadline)
    except grpc.RpcError as err:
        return err.code().name
    return "OK"


@pytest.fixture
def settings(private_stack, built_models, serving_root, database_url):
    private_stack.up("kafka")
    base = serving_v1_settings(built_models, serving_root, "fault-kafka", database_url=database_url)
    return with_stack(base, private_stack, "kafka")


def test_a_broker_restart_never_acknowledges_what_is_not_on_the_topic(
    settings, private_stack, tmp_path, fault_report, client_token
):
    # Postgres only for the callers: the case is about Kafka, inline scores play no part.
    with running_app(settings, 16, grace=5) as server:
        with channel_to(server.port) as ch:
            wait_serving(ch)
        callers = Callers(server.port, client_token, uuid.uuid4().hex[:8]).start()
        wait_until(lambda: callers.acked() >= 300, "300 acknowledged sends", 120)
        fault = time.monotonic()
        private_stack.restart("kafka")
        acked_at_restart = callers.acked()
        wait_until(lambda: callers.acked() >= acked_at_restart + 1, "an OK after the restart", 120)
        recovery = time.monotonic() - fault
        wait_until(lambda: callers.acked() >= acked_at_restart + AFTER_RESTART, "sends", 120)
        callers.stop()
        first = dict(callers.outcomes)
        # A producer sends again what was not acknowledged.
        with channel_to(server.port, client_token) as ch:
            stub = fraud_pb2_grpc.FraudIngestionStub(ch)
            retried = {i: send(stub, i, 20.0) for i, o in first.items() if o != "OK"}
    on_topic = collections.Counter(
        fraud_pb2.TransactionRequest.FromString(m.value()).transaction_id
        for m in consume(settings, settings.topic_raw, len(first))
    )
    codes = collections.Counter(first.values())
    twice = sum(c > 1 for c in on_topic.values())
    with service_process("serving.scorer", settings, tmp_path / "scorer.log"):
        wait_until(lambda: len(scored_ids(settings.database_url, list(first))) == len(first),
                   "every transaction stored", 180)  # fmt: skip
    rows = scored_ids(settings.database_url, list(first))
    fault_report(
        "Kafka broker restarted mid-stream (SendTransaction)", sent=len(first),
        scored=len(set(rows)), lost=len(set(first) - set(on_topic)),
        twice=len(rows) - len(set(rows)), recovery_s=recovery,
        note=f"callers saw {dict(codes)}; after a retry {twice} on the topic twice, "
        "stored once",
    )  # fmt: skip
    assert set(codes) <= {"OK", "UNAVAILABLE", "DEADLINE_EXCEEDED"}
    assert codes["OK"] < len(first), "the restart should have failed some sends"
    assert all(on_topic[i] for i, o in first.items() if o == "OK")  # OK means on the topic
    assert set(retried.values()) == {"OK"}
    assert set(on_topic) == set(first)
    assert sorted(rows) == sorted(first)
