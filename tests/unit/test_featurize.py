"""featurize: time split, held-out test set, feedback merge, refusal of a failed batch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fraudops.features import FEATURE_NAMES
from fraudops.schema import TRANSACTION_COLUMNS
from testkit.transactions import make_transactions
from training.featurize import FeaturizeError, featurize, main
from training.lib.split import split_by_time

PARAMS = {
    "valid_fraction": 0.25,
    "feedback_weight": 4.0,
    "delayed_weight": 4.0,
    "recent_fraction": 0.0,
}


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    """Synthetic data over days 0-10, a holdout over days 10-13, a passing validation."""
    paths = {
        "train": tmp_path / "synthetic.parquet",
        "holdout": tmp_path / "holdout.parquet",
        "validation": tmp_path / "result.json",
        "feedback": tmp_path / "labels.parquet",
        "out": tmp_path / "features",
    }
    make_transactions(3000, seed=1, days=10).to_parquet(paths["train"])
    make_transactions(800, seed=2, days=3, start_day=10).to_parquet(paths["holdout"])
    paths["validation"].write_text(json.dumps({"success": True, "failed": []}))
    return paths


def run(paths: dict[str, Path], feedback: Path | None = None) -> dict[str, pd.DataFrame]:
    featurize(paths["train"], paths["holdout"], feedback, paths["validation"], paths["out"], PARAMS)
    return {
        n: pd.read_parquet(paths["out"] / f"{n}.parquet")
        for n in ("train", "valid", "test", "feedback")
    }


def feedback_rows(source: pd.DataFrame, labels: list[str | None]) -> pd.DataFrame:
    """Live transactions as collect_feedback writes them (label None = not yet labelled)."""
    rows = source.head(len(labels)).copy()
    rows["is_fraud"] = np.int8(0)
    rows["score"] = np.linspace(0.1, 0.9, len(labels))
    rows["band"] = "ALLOW"
    rows["model_version"] = "v1"
    rows["label"] = labels
    rows["label_source"] = "analyst"
    rows["labelled_at"] = pd.Timestamp("2024-01-02", tz="UTC")
    return rows


def test_splits_by_time_and_keeps_holdout_as_test(inputs):
    sets = run(inputs, feedback=None)
    train, valid, test = sets["train"], sets["valid"], sets["test"]
    assert train["timestamp"].max() < valid["timestamp"].min()
    raw = pd.read_parquet(inputs["train"])
    span = raw["timestamp"].max() - raw["timestamp"].min()
    assert valid["timestamp"].min() >= raw["timestamp"].min() + 0.75 * span
    assert len(train) + len(valid) == len(raw)
    assert len(test) == 800
    assert set(test["transaction_id"]) == set(pd.read_parquet(inputs["holdout"])["transaction_id"])
    for frame in (train, valid, test):
        assert all(frame[n].dtype == np.float32 for n in FEATURE_NAMES)
        assert {"is_fraud", "weight", "transaction_id"} <= set(frame.columns)
        assert (frame["weight"] == 1.0).all()


def test_valid_set_is_the_late_side_of_the_shared_time_split(inputs):
    """featurize cuts where reference does: the pipeline's one split rule."""
    valid = run(inputs)["valid"]
    raw = pd.read_parquet(inputs["train"])
    _, late = split_by_time(raw, PARAMS["valid_fraction"], "featurize.valid_fraction")
    assert valid["transaction_id"].tolist() == late["transaction_id"].tolist()


def test_valid_rows_see_their_users_history_from_train(inputs):
    """Velocity is computed before the split, as an online scorer would see it."""
    valid = run(inputs)["valid"]
    assert valid["tx_count_24h"].iloc[:50].sum() > 0


def test_absent_feedback_gives_an_empty_feedback_set(inputs):
    sets = run(inputs, feedback=inputs["feedback"])  # the path does not exist
    assert sets["feedback"].empty
    assert {"champion_score", "model_version", *FEATURE_NAMES} <= set(sets["feedback"].columns)
    meta = json.loads((inputs["out"] / "meta.json").read_text())
    assert meta["labels"] == {"count": 0, "window_start": None, "window_end": None}


def test_empty_feedback_file_with_schema(inputs):
    empty = feedback_rows(make_transactions(10, seed=3), [None] * 10).iloc[:0]
    empty.to_parquet(inputs["feedback"])
    sets = run(inputs, feedback=inputs["feedback"])
    assert sets["feedback"].empty
    assert len(sets["train"]) + len(sets["valid"]) == 3000


def test_labelled_feedback_is_merged_with_weight_and_kept_alone(inputs):
    live = make_transactions(40, seed=4, days=1, start_day=20)
    labels = [None, "FRAUD", "LEGIT", None] * 10
    feedback_rows(live, labels).to_parquet(inputs["feedback"])
    sets = run(inputs, feedback=inputs["feedback"])
    feedback = sets["feedback"]
    assert len(feedback) == 20
    assert feedback["is_fraud"].sum() == 10  # the analyst's label, not the scored is_fraud
    assert (feedback["weight"] == PARAMS["feedback_weight"]).all()
    assert (feedback["model_version"] == "v1").all()
    assert feedback["champion_score"].between(0.1, 0.9).all()
    merged = sets["train"][sets["train"]["transaction_id"].isin(feedback["transaction_id"])]
    assert len(merged) == 20 and (merged["weight"] == PARAMS["feedback_weight"]).all()
    meta = json.loads((inputs["out"] / "meta.json").read_text())
    assert meta["labels"]["count"] == 20 and meta["labels"]["window_start"].startswith("2024-01-02")


def test_unlabelled_feedback_rows_still_count_as_history(inputs):
    live = pd.DataFrame([make_transactions(10, seed=5).iloc[0].to_dict() for _ in range(3)])[
        list(TRANSACTION_COLUMNS)
    ]
    live["transaction_id"] = ["a", "b", "c"]
    live["timestamp"] = live["timestamp"].iloc[0] + np.array([0, 60, 120])
    feedback_rows(live, [None, None, "FRAUD"]).to_parquet(inputs["feedback"])
    feedback = run(inputs, feedback=inputs["feedback"])["feedback"]
    assert list(feedback["transaction_id"]) == ["c"]
    assert feedback["tx_count_1h"].iloc[0] == 2.0


@pytest.mark.parametrize(
    "result", [{"success": False, "failed": ["amount_not_null"]}, {"failed": []}]
)
def test_refuses_a_batch_that_failed_validation(inputs, result):
    inputs["validation"].write_text(json.dumps(result))
    with pytest.raises(FeaturizeError, match="failed validation"):
        run(inputs)
    assert not inputs["out"].exists()


def test_cli_exits_non_zero_on_failed_validation_or_missing_result(inputs, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"featurize": PARAMS}))
    argv = [
        "--train", str(inputs["train"]), "--holdout", str(inputs["holdout"]),
        "--validation", str(inputs["validation"]), "--out-dir", str(inputs["out"]),
        "--params", str(params),
    ]  # fmt: skip
    inputs["validation"].write_text(json.dumps({"success": False, "failed": ["x"]}))
    with pytest.raises(SystemExit) as failed:
        main(argv)
    assert failed.value.code == 1
    inputs["validation"].unlink()
    with pytest.raises(SystemExit) as missing:
        main(argv)
    assert missing.value.code == 1
    inputs["validation"].write_text(json.dumps({"success": True, "failed": []}))
    main(argv)
    assert (inputs["out"] / "train.parquet").is_file()


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5])
def test_rejects_a_meaningless_valid_fraction(inputs, fraction):
    with pytest.raises(FeaturizeError, match="valid_fraction"):
        featurize(
            inputs["train"], inputs["holdout"], None, inputs["validation"], inputs["out"],
            {**PARAMS, "valid_fraction": fraction},
        )  # fmt: skip


def test_weights_follow_the_label_kind_and_the_newest_labels_are_held_out(inputs):
    live = make_transactions(40, seed=6, days=1, start_day=20)
    rows = feedback_rows(live, ["FRAUD", "LEGIT"] * 20)
    rows["label_kind"] = ["feedback", "delayed"] * 20
    rows["labelled_at"] = pd.Timestamp("2024-01-21", tz="UTC") + pd.to_timedelta(
        np.arange(40), unit="h"
    )
    rows.to_parquet(inputs["feedback"])
    params = {**PARAMS, "feedback_weight": 1.0, "delayed_weight": 3.0, "recent_fraction": 0.25}
    featurize(
        inputs["train"],
        inputs["holdout"],
        inputs["feedback"],
        inputs["validation"],
        inputs["out"],
        params,
    )
    feedback = pd.read_parquet(inputs["out"] / "feedback.parquet")
    by_kind = feedback.groupby("label_kind")["weight"].unique().to_dict()
    assert {k: list(v) for k, v in by_kind.items()} == {"delayed": [3.0], "feedback": [1.0]}
    recent = pd.read_parquet(inputs["out"] / "recent.parquet")
    train = pd.read_parquet(inputs["out"] / "train.parquet")
    assert len(recent) == 10  # the last quarter of 40 hourly labels
    assert (
        recent["labelled_at"].min()
        > feedback["labelled_at"].drop(recent.index, errors="ignore").min()
    )
    live_in_train = train[train["transaction_id"].isin(feedback["transaction_id"])]
    assert len(live_in_train) == 30
    assert not set(recent["transaction_id"]) & set(train["transaction_id"])
    meta = json.loads((inputs["out"] / "meta.json").read_text())
    assert meta["label_kinds"] == {
        "train": {"delayed": 15, "feedback": 15},
        "recent": {"delayed": 5, "feedback": 5},
    }


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_rejects_a_meaningless_recent_fraction(inputs, fraction):
    with pytest.raises(FeaturizeError, match="recent_fraction"):
        featurize(
            inputs["train"],
            inputs["holdout"],
            None,
            inputs["validation"],
            inputs["out"],
            {**PARAMS, "recent_fraction": fraction},
        )
