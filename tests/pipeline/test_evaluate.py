"""evaluate: corrections on hand-made data, and the stage with a real MLflow server and a
TFLite champion.

Train and evaluate run here as by hand, outside DVC and Airflow: dataset digests are content
hashes, and the runs' parent is named by commit, params and data."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudops.features import FEATURE_NAMES, N_FEATURES
from fraudops.modelspec import MODEL_FILE, now_iso, publish, write_spec
from testkit.pipeline_project import merged
from testkit.transactions import make_transactions
from tests.helpers.lineage import dataset_inputs, training_runs
from tests.pipeline.test_train import TINY
from training.evaluate import corrections, evaluate
from training.featurize import featurize
from training.lib import metrics

EVAL_PARAMS = {"fpr": 0.01, "score_batch": 1000, "daily_budget": 50}


def test_corrections_count_what_the_candidate_fixes_and_breaks():
    labels = np.array([0, 0, 0, 1, 1, 1])
    served = np.array([0.9, 0.9, 0.1, 0.1, 0.1, 0.9])
    candidate = np.array([0.1, 0.9, 0.9, 0.9, 0.1, 0.1])
    served_t = {"challenge": np.full(6, 0.5), "block": np.full(6, 0.95)}
    out = corrections(labels, served, served_t, candidate, {"challenge": 0.5, "block": 0.95})
    assert out["challenge"] == {
        "champion_false_positives": 2,
        "fixed_by_candidate": 1,
        "champion_missed_frauds": 2,
        "caught_by_candidate": 1,
        "new_false_positives": 1,
        "new_missed_frauds": 1,
    }
    assert out["block"]["champion_missed_frauds"] == 3 and out["block"]["caught_by_candidate"] == 0


# Smaller than test_train's model: evaluate only needs a candidate to compare.
TINY_TRAIN = merged(TINY, {"seed": 5, "hidden_units": [16], "max_epochs": 4,
                           "baseline": {"max_iter": 20}, "explain_rows": 2000})  # fmt: skip


def _feedback(n: int) -> pd.DataFrame:
    """Labelled live transactions as scored by champion v1 (scores from the label, noisy)."""
    live = make_transactions(n, fraud_rate=0.2, seed=21, days=1, start_day=40)
    rng = np.random.default_rng(3)
    live["score"] = np.clip(live["is_fraud"] * 0.5 + rng.random(n) * 0.6, 0, 1)
    live["band"] = "ALLOW"
    live["model_version"] = "v1"
    live["label"] = np.where(live["is_fraud"] == 1, "FRAUD", "LEGIT")
    live["label_source"] = "analyst"
    live["labelled_at"] = pd.Timestamp("2024-02-01", tz="UTC")
    return live


@pytest.fixture(scope="module")
def project(tmp_path_factory, mlflow_tracking_uri) -> dict[str, Path]:
    """Featurized toy data with feedback, and a tiny trained candidate."""
    from training.train import train

    root = tmp_path_factory.mktemp("evaluate")
    make_transactions(6000, fraud_rate=0.03, seed=31, days=20).to_parquet(root / "raw.parquet")
    make_transactions(2000, fraud_rate=0.03, seed=32, days=5, start_day=20).to_parquet(
        root / "holdout.parquet"
    )
    _feedback(300).to_parquet(root / "labels.parquet")
    (root / "result.json").write_text(json.dumps({"success": True, "failed": []}))
    featurize(
        root / "raw.parquet", root / "holdout.parquet", root / "labels.parquet",
        root / "result.json", root / "features",
        {"valid_fraction": 0.25, "feedback_weight": 3, "delayed_weight": 3, "recent_fraction": 0},
    )  # fmt: skip
    params = {**TINY_TRAIN, "experiment": f"test-evaluate-{uuid.uuid4().hex[:8]}"}
    train(root / "features", root / "candidate", params, mlflow_tracking_uri)
    return {"root": root, "features": root / "features", "candidate": root / "candidate"}


def publish_candidate_as_champion(
    candidate: Path, serving: Path, version: str, golden_output: float = 0.0
) -> None:
    """The candidate converted to TFLite and published, as promote would leave it (with a
    golden output far from the model's, a publication the scorer rejects)."""
    import keras

    from training.export import convert

    info = json.loads((candidate / "train.json").read_text())
    staging = serving.parent / f"staging-{version}"
    staging.mkdir(parents=True)
    tflite = convert(keras.models.load_model(candidate / "model.keras"), quantize=False)
    (staging / MODEL_FILE).write_bytes(tflite)
    spec = {
        "version": version,
        "mlflow_run_id": info["mlflow_run_id"],
        "data_hash": info["data_hash"],
        "feature_names": list(FEATURE_NAMES),
        "thresholds": info["thresholds"],
        "metrics": {},
        "golden": {"inputs": [[0.0] * N_FEATURES], "outputs": [golden_output], "tolerance": 1.0},
        "explain": info["explain"],
        "published_at": now_iso(),
    }
    write_spec(staging, spec)
    publish(staging, serving, version)


def run_evaluate(project: dict, serving: Path, uri: str) -> dict:
    out = serving.parent / "metrics.json"
    evaluate(
        project["features"], project["candidate"], serving, out, serving.parent / "plots",
        EVAL_PARAMS, uri,
    )  # fmt: skip
    return json.loads(out.read_text())


def test_evaluate_without_a_champion(project, mlflow_tracking_uri, tmp_path):
    serving = tmp_path / "serving"  # absent: nothing published yet
    report = run_evaluate(project, serving, mlflow_tracking_uri)
    assert report["champion"] is None
    for name in ("candidate", "baseline", "ablation"):
        assert 0.0 < report[name]["pr_auc"] <= 1.0
        assert report[name]["rows"] == 2000
    assert report["candidate"]["pr_auc"] > 0.5  # chance is the 3% fraud rate
    without = report["candidate_without_balances"]  # every held-out row as a card payment
    assert 0.0 < without["pr_auc"] <= 1.0 and without["rows"] == 2000
    nowhere = report["candidate_without_location"]  # every held-out row with location unknown
    assert 0.0 < nowhere["pr_auc"] <= 1.0 and nowhere["rows"] == 2000
    feedback = report["feedback"]
    assert feedback["rows"] == 300 and feedback["candidate"]["pr_auc"] is not None
    assert feedback["champion"] is None and feedback["corrections"] is None
    curves = pd.read_csv(tmp_path / "plots" / "pr_curve.csv")
    expected = ["recall", "candidate_precision", "baseline_precision", "ablation_precision"]
    assert list(curves.columns) == expected
    assert len(curves) == len(metrics.RECALL_GRID)


def test_evaluate_with_a_champion_scores_it_with_tflite(project, mlflow_tracking_uri, tmp_path):
    from mlflow import MlflowClient

    serving = tmp_path / "serving"
    publish_candidate_as_champion(project["candidate"], serving, "v1")
    report = run_evaluate(project, serving, mlflow_tracking_uri)
    champion = report["champion"]
    assert champion["version"] == "v1"
    # The champion is the candidate exported: TFLite must rank the test set the same way.
    assert champion["pr_auc"] == pytest.approx(report["candidate"]["pr_auc"], abs=1e-3)
    fixes = report["feedback"]["corrections"]["challenge"]
    assert fixes["fixed_by_candidate"] <= fixes["champion_false_positives"]
    assert fixes["caught_by_candidate"] <= fixes["champion_missed_frauds"]
    assert report["feedback"]["champion"]["rows"] == 300
    info = json.loads((project["candidate"] / "train.json").read_text())
    client = MlflowClient(mlflow_tracking_uri)
    logged = client.get_run(info["mlflow_run_id"]).data.metrics
    assert logged["test_pr_auc"] == pytest.approx(report["candidate"]["pr_auc"])
    assert logged["champion_test_pr_auc"] == pytest.approx(champion["pr_auc"])
    assert "feedback_challenge_fixed_by_candidate" in logged
    baseline = client.get_run(info["baseline_run_id"]).data.metrics
    assert baseline["test_pr_auc"] == pytest.approx(report["baseline"]["pr_auc"])
    artifacts = {a.path for a in client.list_artifacts(info["mlflow_run_id"])}
    assert {"metrics.json", "pr_curve.csv"} <= artifacts


def test_evaluate_judges_the_champion_the_scorer_serves(project, mlflow_tracking_uri, tmp_path):
    serving = tmp_path / "serving"
    publish_candidate_as_champion(project["candidate"], serving, "v1")
    publish_candidate_as_champion(project["candidate"], serving, "v2", golden_output=5.0)
    report = run_evaluate(project, serving, mlflow_tracking_uri)
    assert report["champion"]["version"] == "v1"  # v2 is newer, but no scorer loads it
    (rejected,) = report["champion_rejected"]
    assert rejected["version"] == "v2" and "golden outputs off" in rejected["problem"]


def test_each_run_records_every_set_it_was_scored_on_once(project, mlflow_tracking_uri, tmp_path):
    """Train's sets and evaluate's (test, feedback) as dataset inputs of the candidate,
    baseline and ablation runs; evaluating again adds no second copy."""
    from mlflow import MlflowClient

    for attempt in ("first", "second"):
        run_evaluate(project, tmp_path / attempt / "serving", mlflow_tracking_uri)
    info = json.loads((project["candidate"] / "train.json").read_text())
    md5 = {
        name: hashlib.md5((project["features"] / f"{name}.parquet").read_bytes()).hexdigest()
        for name in ("train", "valid", "test", "feedback")
    }
    contexts = {"training": "train", "validation": "valid", "test": "test", "feedback": "feedback"}
    expected = sorted((context, name, md5[name]) for context, name in contexts.items())
    client = MlflowClient(mlflow_tracking_uri)
    runs = training_runs(client, info)
    for run in runs.values():
        inputs = dataset_inputs(run)
        assert sorted((context, d.name, d.digest) for context, d, _ in inputs) == expected
        assert {tags["fraudops.digest_source"] for _, _, tags in inputs} == {"content"}
        assert run.data.tags["mlflow.parentRunId"] == info["parent_run_id"]
    report = json.loads((tmp_path / "second" / "metrics.json").read_text())
    logged = runs["ablation"].data.metrics["test_pr_auc"]
    assert logged == pytest.approx(report["ablation"]["pr_auc"])
    assert info["pipeline_run"].startswith("local:")
    parent = client.get_run(info["parent_run_id"]).data.tags
    assert parent["fraudops.pipeline_run"] == info["pipeline_run"]


def test_cli_refuses_missing_inputs_with_a_clear_error(tmp_path, capsys):
    from training.evaluate import main

    params = tmp_path / "params.yaml"
    params.write_text("evaluate:\n  fpr: 0.01\n  score_batch: 100\nqueue:\n  daily_budget: 10\n")
    argv = ["--features", str(tmp_path / "nowhere"), "--candidate", str(tmp_path / "c"),
            "--out", str(tmp_path / "m.json"), "--plots", str(tmp_path / "p"),
            "--params", str(params)]  # fmt: skip
    with pytest.raises(SystemExit) as refused:
        main(argv)
    assert refused.value.code == 1
    assert "test.parquet: missing (run featurize first)" in capsys.readouterr().err
