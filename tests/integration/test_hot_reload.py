"""Hot reload under load: a client thread keeps calling Score while new models land.
A good model is swapped in with no failed request, a truncated one is rejected while the
old one keeps answering, a rollback re-publishes an earlier version, and each step is in
model_deployments and audit_log."""

from __future__ import annotations

import os
import shutil
import threading
import time

import grpc
import pytest

from fraudops.modelspec import publish
from fraudops.proto_gen.fraud.v1 import fraud_pb2_grpc
from serving.rollback import rollback
from serving.server import ServingApp
from tests.helpers.serving_env import (
    channel_to,
    make_settings,
    publish_model,
    query,
    transaction,
    wait_serving,
    wait_until,
)

pytestmark = pytest.mark.slow


class SteadyClient(threading.Thread):
    """Calls Score back to back until stopped (bounded in count and time), recording the
    model version of each answer and every failure."""

    def __init__(self, port: int, token: str, max_calls: int = 200_000, max_seconds: float = 120):
        super().__init__(daemon=True)
        self.port, self.token = port, token
        self.max_calls, self.max_seconds = max_calls, max_seconds
        self.versions: list[str] = []
        self.failures: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with channel_to(self.port, self.token) as channel:
            stub = fraud_pb2_grpc.FraudScoringStub(channel)
            for i in range(self.max_calls):
                if self.stopping.is_set() or time.monotonic() > deadline:
                    return
                try:
                    self.versions.append(stub.Score(transaction(i), timeout=10).model_version)
                except grpc.RpcError as err:
                    self.failures.append(f"{err.code()}: {err.details()}")

    def seen(self, version: str, after: int = 0) -> bool:
        return version in self.versions[after:]


def _truncated_copy(built_models, tmp_path):
    staging = tmp_path / "staging-bad"
    shutil.copytree(built_models / "v1", staging)
    data = (staging / "model.tflite").read_bytes()
    (staging / "model.tflite").write_bytes(data[: len(data) // 3])
    return staging


def _audit(url: str, kinds: tuple[str, ...]) -> list[tuple[str, str]]:
    rows = query(
        url, "SELECT kind, subject FROM audit_log WHERE kind = ANY(%s) ORDER BY id", (list(kinds),)
    )
    return [(k, s) for k, s in rows]


def test_reload_under_load_swaps_rejects_and_rolls_back(
    built_models, serving_root, tmp_path, database_url, client_token
):
    publish_model(built_models, serving_root, "v1")
    settings = make_settings(model_dir=serving_root, database_url=database_url)
    audit_before = len(_audit(database_url, ("reload", "reload_rejected", "rollback")))
    [(deployments_before,)] = query(
        database_url, "SELECT coalesce(max(id), 0) FROM model_deployments"
    )
    server = ServingApp(settings, max_workers=8)
    server.start()
    client = SteadyClient(server.port, client_token)
    try:
        with channel_to(server.port) as ch:
            wait_serving(ch)
        client.start()
        wait_until(lambda: len(client.versions) >= 200, "a steady stream of answers")

        publish_model(built_models, serving_root, "v2")
        wait_until(lambda: client.seen("v2"), "answers from v2", timeout=60)

        bad = publish(_truncated_copy(built_models, tmp_path), serving_root, "v3")
        wait_until(
            lambda: ("reload_rejected", "v3") in _audit(database_url, ("reload_rejected",)),
            "v3 to be rejected",
        )
        mark = len(client.versions)
        wait_until(lambda: len(client.versions) >= mark + 200, "answers after the rejection")

        rollback(serving_root, "v1", database_url)
        mark = len(client.versions)
        wait_until(lambda: client.seen("v1", after=mark), "answers from v1 again", timeout=60)
    finally:
        client.stopping.set()
        client.join(timeout=30)
        server.stop(grace=2)

    assert client.failures == []
    assert bad.name == "v3" and "v3" not in client.versions
    # One client, one model reference: versions change in order and never flip back.
    changes = [v for i, v in enumerate(client.versions) if i == 0 or v != client.versions[i - 1]]
    assert changes == ["v1", "v2", "v1"]
    trail = _audit(database_url, ("reload", "reload_rejected", "rollback"))[audit_before:]
    assert trail == [
        ("reload", "v1"),
        ("reload", "v2"),
        ("reload_rejected", "v3"),
        ("rollback", "v1"),
        ("reload", "v1"),
    ]
    deployments = query(
        database_url,
        "SELECT version, served_until IS NOT NULL FROM model_deployments "
        "WHERE pid = %s AND id > %s ORDER BY id",
        (os.getpid(), deployments_before),
    )
    assert deployments == [("v1", True), ("v2", True), ("v1", True)]
