"""Serving without services: the light install, model checks, the watcher, the scoring
core, validation, TLS policy, rollback choice, COPY rows. Real TFLite models throughout
(built once per session in a TensorFlow subprocess)."""

# Fixtures are imported from helpers.serving_env; using one as an argument is not a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import TopicPartition
from helpers.serving_env import (  # noqa: F401 - fixtures
    ROOT,
    built_models,
    make_settings,
    publish_model,
    serving_root,
    transaction,
    wait_until,
)

from fraudops.bands import band_name
from fraudops.features import N_FEATURES
from fraudops.schema import InvalidTransaction
from serving import metrics
from serving.model_store import ModelRejected, ModelStore, load_model
from serving.persistence import SCORE_COLUMNS, score_csv
from serving.rollback import RollbackError, choose_version
from serving.scorer import next_offsets
from serving.scoring import NoModel, ScoringCore, decode, decode_batch
from serving.tls import InsecureBinding, is_loopback, server_credentials

SERVING_MODULES = (
    "serving.server", "serving.scorer", "serving.rollback", "serving.model_store",
    "serving.scoring", "serving.persistence", "serving.kafka_io", "serving.metrics",
    "serving.tls", "serving.labels",
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


class ListRecorder:
    """Collects what the store would record in Postgres (the Postgres path is exercised
    by the integration tests)."""

    def __init__(self):
        self.swaps: list[tuple[str | None, str, str]] = []
        self.rejections: list[tuple[str, str]] = []

    def reload(self, old, new, reason):
        self.swaps.append((old.version if old else None, new.version, reason))

    def reload_rejected(self, path, problem, serving):
        self.rejections.append((Path(path).name, problem))


def _break(model_dir: Path, how: str) -> None:
    spec_path = model_dir / "model.json"
    spec = json.loads(spec_path.read_text())
    if how == "truncated":
        data = (model_dir / "model.tflite").read_bytes()
        (model_dir / "model.tflite").write_bytes(data[: len(data) // 2])
    elif how == "missing_tflite":
        (model_dir / "model.tflite").unlink()
    elif how == "features":
        spec["feature_names"] = spec["feature_names"][:-1]
    elif how == "golden":
        spec["golden"]["outputs"] = [o + 0.2 for o in spec["golden"]["outputs"]]
    elif how == "version":
        spec["version"] = "someone-else"
    spec_path.write_text(json.dumps(spec))


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncated", "does not load"),
        ("missing_tflite", "unreadable"),
        ("features", "feature_names differ"),
        ("golden", "golden outputs off"),
        ("version", "the directory is"),
    ],
)
def test_a_broken_model_is_rejected_naming_the_problem(built_models, tmp_path, how, message):
    model_dir = tmp_path / "v1"
    shutil.copytree(built_models / "v1", model_dir)
    _break(model_dir, how)
    with pytest.raises(ModelRejected, match=message):
        load_model(model_dir)


def test_startup_serves_the_latest_valid_publication(built_models, serving_root):
    publish_model(built_models, serving_root, "v2")
    publish_model(built_models, serving_root, "v1")  # published later: wins
    broken = publish_model(built_models, serving_root, "v2", as_version="v3")
    _break(broken, "truncated")
    recorder = ListRecorder()
    store = ModelStore(serving_root, recorder)
    assert store.load_latest().version == "v1"
    assert recorder.rejections[0][0] == "v3"
    assert recorder.swaps == [(None, "v1", "startup")]


def test_watcher_swaps_in_new_versions_and_keeps_serving_past_a_broken_one(
    built_models, serving_root
):
    publish_model(built_models, serving_root, "v1")
    recorder = ListRecorder()
    store = ModelStore(serving_root, recorder)
    store.load_latest()
    store.start_watching()
    try:
        publish_model(built_models, serving_root, "v2")  # an atomic rename: a moved event
        wait_until(lambda: store.current.version == "v2", "v2 to be served", timeout=30)
        bad = serving_root.parent / "staging" / "v3"
        shutil.copytree(built_models / "v1", bad)
        _break(bad, "golden")
        shutil.copytree(bad, serving_root / "v3")  # a plain copy: created events
        wait_until(lambda: recorder.rejections, "v3 to be rejected", timeout=30)
        assert store.current.version == "v2"
        (serving_root / ".tmp-ignored").mkdir()
        shutil.copytree(built_models / "v1", serving_root / ".tmp-ignored" / "v9")
        publish_model(built_models, serving_root, "v1", as_version="v4")
        wait_until(lambda: store.current.version == "v4", "v4 to be served", timeout=30)
    finally:
        store.stop()
    assert [s[1] for s in recorder.swaps] == ["v1", "v2", "v4"]
    assert [r[0] for r in recorder.rejections] == ["v3"]


@pytest.mark.parametrize("n", [1, 3, 8, 100, 4097])
def test_batched_inference_matches_one_at_a_time(built_models, n):
    model = load_model(built_models / "v1")
    x = np.random.default_rng(n).normal(size=(n, N_FEATURES)).astype(np.float32)
    batched = model.predict(x)
    singles = np.concatenate([model.predict(x[i : i + 1]) for i in range(0, n, max(1, n // 7))])
    assert batched.shape == (n,)
    np.testing.assert_allclose(batched[:: max(1, n // 7)], singles, atol=1e-6)


def test_scoring_core_bands_reasons_and_version(built_models, serving_root):
    store = ModelStore(serving_root)
    core = ScoringCore(store)
    with pytest.raises(NoModel):
        core.score([decode(transaction(0))])
    publish_model(built_models, serving_root, "v1")
    store.load_latest()
    txs = [decode(transaction(i)) for i in range(40)]
    batch = core.score(txs)
    thresholds = store.current.thresholds
    assert batch.band_names() == [band_name(s, thresholds) for s in batch.scores.tolist()]
    responses = batch.responses()
    assert [r.transaction_id for r in responses] == [f"tx-{i}" for i in range(40)]
    assert {r.model_version for r in responses} == {"v1"}
    assert all(0.0 <= r.score <= 1.0 and r.latency_us >= 0 for r in responses)
    assert all(isinstance(reason, str) for r in responses for reason in r.reasons)
    assert len(core.features) == len({t["user_id"] for t in txs})


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


def test_rollback_chooses_the_previous_distinct_version(built_models, serving_root):
    with pytest.raises(RollbackError, match="no published models"):
        choose_version(serving_root, None)
    publish_model(built_models, serving_root, "v1")
    with pytest.raises(RollbackError, match="no earlier valid version"):
        choose_version(serving_root, None)
    publish_model(built_models, serving_root, "v2")
    assert choose_version(serving_root, None) == ("v1", "v2")
    assert choose_version(serving_root, "v2") == ("v2", "v2")
    with pytest.raises(RollbackError, match="not under"):
        choose_version(serving_root, "v7")
    broken = publish_model(built_models, serving_root, "v1", as_version="v3")
    _break(broken, "truncated")  # published last but never served: v2 is still current
    assert choose_version(serving_root, None) == ("v1", "v2")


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


def test_copy_rows_survive_awkward_text(built_models, serving_root):
    publish_model(built_models, serving_root, "v1")
    store = ModelStore(serving_root)
    store.load_latest()
    awkward = 'a,"b"\n\\c\td'
    batch = ScoringCore(store).score([decode(transaction(0, channel=awkward))])
    buf, n = score_csv([(batch, "inline")])
    [row] = list(csv.reader(buf))
    assert n == 1 and len(row) == len(SCORE_COLUMNS)
    values = dict(zip(SCORE_COLUMNS, row, strict=True))
    assert values["channel"] == awkward and values["source"] == "inline"
    assert json.loads(values["reasons"]) == batch.reasons[0]


def test_model_version_gauge_names_one_version():
    metrics.set_model_version("a")
    metrics.set_model_version("b")
    value = metrics.REGISTRY.get_sample_value
    assert value("fraudops_model_info", {"version": "b"}) == 1
    assert value("fraudops_model_info", {"version": "a"}) == 0
