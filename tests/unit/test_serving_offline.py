"""Serving with no model and no services: the light install imports no TensorFlow,
validation names the field, the TLS policy, commit offsets, the version gauge."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from confluent_kafka import TopicPartition

from fraudops.rules import Decisions
from fraudops.schema import InvalidTransaction
from serving import metrics
from serving.kafka_io import next_offsets
from serving.scoring import decode, decode_batch
from serving.tls import InsecureBinding, is_loopback, server_credentials
from tests.helpers.serving_env import (
    ROOT,
    make_settings,
    transaction,
)

SERVING_MODULES = (
    "serving.server", "serving.scorer", "serving.rollback", "serving.model_store",
    "serving.scoring", "serving.persistence", "serving.kafka_io", "serving.metrics",
    "serving.tls", "serving.labels", "fraudops.runner",
)  # fmt: skip


def test_serving_imports_without_tensorflow():
    code = (
        f"import sys\nfor m in {SERVING_MODULES!r}: __import__(m)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'tf_keras', 'jax', 'torch'))\nprint(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"amount": float("nan")}, "amount"),
        ({"amount": float("inf")}, "amount"),
        ({"amount": -5.0}, "amount"),
        ({"amount": 0.0}, "amount"),
        ({"old_balance_orig": float("-inf")}, "old_balance_orig"),
        ({"type": "WIRE"}, "type"),
        ({"type": ""}, "type"),
        ({"transaction_id": ""}, "transaction_id"),
        ({"transaction_id": "x" * 65}, "transaction_id"),
        ({"user_id": 0}, "user_id"),
        ({"timestamp": 0}, "timestamp"),
        ({"channel": "c" * 65}, "channel"),
        ({"channel": "a\x00b"}, "channel"),
        ({"transaction_id": "a\x00b"}, "transaction_id"),
        ({"timestamp": 2**63 - 1}, "timestamp"),
    ],
)
def test_invalid_transactions_name_the_field(fields, field):
    with pytest.raises(InvalidTransaction) as err:
        decode(transaction(1, **fields))
    assert err.value.field == field
    with pytest.raises(InvalidTransaction) as err:
        decode_batch([transaction(0), transaction(1, **fields)])
    assert err.value.field == f"transactions[1].{field}"


def test_plain_text_only_on_loopback(tmp_path):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    assert server_credentials(make_settings()) is None
    with pytest.raises(InsecureBinding, match="refusing plain text on 0.0.0.0"):
        server_credentials(make_settings(grpc_host="0.0.0.0"))
    with pytest.raises(InsecureBinding, match="together"):
        server_credentials(make_settings(tls_cert=tmp_path / "cert.pem"))


def test_commit_offsets_are_one_past_the_last_message_per_partition():
    class Msg:
        def __init__(self, p, o):
            self.p, self.o = p, o

        def topic(self):
            return "raw"

        def partition(self):
            return self.p

        def offset(self):
            return self.o

    got = next_offsets([Msg(0, 5), Msg(1, 2), Msg(0, 6), Msg(0, 7)])
    assert sorted((tp.partition, tp.offset) for tp in got) == [(0, 8), (1, 3)]
    assert all(isinstance(tp, TopicPartition) for tp in got)


def test_model_version_gauge_names_one_version():
    metrics.set_model_version("a")
    metrics.set_model_version("b")
    value = metrics.REGISTRY.get_sample_value
    assert value("fraudops_model_info", {"version": "b"}) == 1
    assert value("fraudops_model_info", {"version": "a"}) == 0


def test_rule_matches_are_counted_by_rule_and_mode_alone_and_in_a_batch():
    def matches(rule: str, mode: str) -> float:
        labels = {"rule": rule, "mode": mode}
        return metrics.REGISTRY.get_sample_value("fraudops_rule_matches_total", labels) or 0.0

    keys = [("big", "live"), ("watch", "shadow"), ("big", "shadow")]
    before = {key: matches(*key) for key in keys}
    one = Decisions(np.zeros(1), ["big"], [["watch"]], matched=True)
    batch = Decisions(np.zeros(3), ["big", "model", "big"], [None, ["watch"], ["watch"]],
                      errors=1, matched=True)  # fmt: skip
    for decisions in (one, batch):
        metrics.count_rules(decisions)
    assert [matches(*key) - before[key] for key in keys] == [3, 3, 0]
