"""The model store and scoring core on real TFLite models (built once per session in a
TensorFlow subprocess): checks, the watcher, batching, rollback choice, COPY rows."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fraudops.bands import band_name
from fraudops.features import N_FEATURES
from fraudops.schema import proto_to_dict
from serving.model_store import ModelRejected, ModelStore, load_model
from serving.persistence import SCORE_COLUMNS, score_csv
from serving.rollback import RollbackError, choose_version
from serving.scoring import NoModel, ScoringCore, decode
from tests.helpers.serving_env import (
    publish_model,
    transaction,
    wait_until,
)


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
    users = {t["user_id"] for t in txs}
    assert sum(len(core.features.history(u)) for u in users) == len(txs)  # each one recorded


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


def test_copy_rows_survive_awkward_text(built_models, serving_root):
    publish_model(built_models, serving_root, "v1")
    store = ModelStore(serving_root)
    store.load_latest()
    awkward = 'a,"b"\n\\c\td'  # control characters fail validation; COPY must cope anyway
    batch = ScoringCore(store).score([proto_to_dict(transaction(0, channel=awkward))])
    buf, n = score_csv([(batch, "inline")])
    [row] = list(csv.reader(buf))
    assert n == 1 and len(row) == len(SCORE_COLUMNS)
    values = dict(zip(SCORE_COLUMNS, row, strict=True))
    assert values["channel"] == awkward and values["source"] == "inline"
    assert json.loads(values["reasons"]) == batch.reasons[0]
