"""train: the Keras model (unit), the stage against a real MLflow server (integration), and
the trained candidate's behaviour (model tests: direction, calibrated scale).

The stage runs as an Airflow task would (the DAG run's context variables in its environment)
on features that a real DVC project records, so the runs' dataset digests are DVC's."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import average_precision_score

from fraudops.features import FEATURE_NAMES, N_FEATURES, batch_features
from testkit.transactions import make_transactions
from tests.helpers.lineage import dataset_inputs, dvc_recorded, training_runs
from training.featurize import featurize

TINY = {
    "seed": 7,
    "hidden_units": [16, 8],
    "dropout": 0.0,
    "learning_rate": 0.01,
    "batch_size": 256,
    "max_epochs": 6,
    "patience": 2,
    "positive_weight_power": 0.5,
    "block_fpr": 0.001,
    "challenge_fpr": 0.01,
    "missing_balance_share": 0.3,
    "baseline": {
        "max_iter": 30,
        "learning_rate": 0.1,
        "max_leaf_nodes": 15,
        "threads": 1,
        "min_samples_leaf": 20,
        "l2_regularization": 1.0,
    },
    "explain_rows": 5000,
}
AGREED_METRICS = {
    "valid_pr_auc",
    "valid_roc_auc",
    "valid_recall_at_fpr",
    "valid_challenge_precision",
    "valid_challenge_recall",
    "valid_block_precision",
    "valid_block_recall",
    "valid_flagged_precision",
    "valid_flagged_recall",
    "valid_allow_rows",
    "fit_seconds",
}


DAG_RUN = f"manual__{uuid.uuid4().hex[:8]}"
SYNTH_REPORT = {
    "quality": {
        "legit": {"overall": 0.95, "column_shapes": 0.96, "columns": {"amount": 0.9}},
        "fraud": {"overall": 0.97, "column_shapes": 0.95, "columns": {"amount": 0.8}},
    },
    "segments": {"legit_CASH_IN": {"rows": 10}},
}


def toy_features(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Separable toy set: fraud iff the first two features sum high (5% fraud)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, N_FEATURES)).astype(np.float32) * 3 + 10
    y = (x[:, 0] + x[:, 1] > np.quantile(x[:, 0] + x[:, 1], 0.95)).astype(np.int8)
    return x, y


def test_tiny_model_beats_chance_and_is_deterministic():
    import keras

    from training.lib.model import build_model, predict

    x, y = toy_features(3000, seed=1)
    xv, yv = toy_features(1000, seed=2)
    weights = []
    for _ in range(2):
        keras.utils.set_random_seed(3)
        model = build_model(x, hidden_units=(8,), learning_rate=0.01, initial_rate=0.05)
        model.fit(x, y, epochs=5, batch_size=128, verbose=0)
        weights.append(model.get_weights())
    assert model.input_shape == (None, N_FEATURES) and model.output_shape == (None, 1)
    assert average_precision_score(yv, predict(model, xv)) > 0.8  # chance is 0.05
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_correct_prior_divides_the_class_weight_out_of_the_odds():
    from training.lib.model import build_model, correct_prior, predict

    x, _ = toy_features(200, seed=3)
    model = build_model(x, hidden_units=(4,), initial_rate=0.3)
    before = predict(model, x)
    correct_prior(model, 4.0)
    after = predict(model, x)
    odds = lambda p: p / (1 - p)  # noqa: E731
    np.testing.assert_allclose(odds(after), odds(before) / 4.0, rtol=1e-4)


def dvc(root: Path, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory) -> Path:
    """Featurized toy data, recorded as the out of a `featurize` stage of a DVC project."""
    root = tmp_path_factory.mktemp("train-data")
    make_transactions(8000, fraud_rate=0.03, seed=11, days=20).to_parquet(root / "raw.parquet")
    make_transactions(2000, fraud_rate=0.03, seed=12, days=5, start_day=20).to_parquet(
        root / "holdout.parquet"
    )
    (root / "result.json").write_text(json.dumps({"success": True, "failed": []}))
    out = root / "features"
    featurize(
        root / "raw.parquet", root / "holdout.parquet", None, root / "result.json", out,
        {"valid_fraction": 0.25, "feedback_weight": 5.0, "delayed_weight": 5.0,
         "recent_fraction": 0.0},
    )  # fmt: skip
    dvc(root, "init", "--no-scm", "-q")
    stage = {"cmd": "true", "outs": ["features"]}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"featurize": stage}}))
    dvc(root, "commit", "--force", "-q", "featurize")
    return out


@pytest.fixture(scope="module")
def trained(features_dir, mlflow_tracking_uri, tmp_path_factory) -> dict:
    from training.train import train

    out = tmp_path_factory.mktemp("candidate")
    params = {**TINY, "experiment": f"test-train-{uuid.uuid4().hex[:8]}"}
    quality = out.parent / "synthesizer_quality.json"
    quality.write_text(json.dumps(SYNTH_REPORT))
    environ = {"AIRFLOW_CTX_DAG_ID": "fraud_training", "AIRFLOW_CTX_DAG_RUN_ID": DAG_RUN}
    info = train(features_dir, out, params, mlflow_tracking_uri, quality, environ)
    return {"info": info, "dir": out, "uri": mlflow_tracking_uri}


def _runs(trained) -> dict:
    from mlflow import MlflowClient

    return training_runs(MlflowClient(trained["uri"]), trained["info"])


def test_runs_read_the_train_and_valid_sets_with_dvc_digests(trained, features_dir):
    expected = {
        (context, name, dvc_recorded(features_dir.parent, "featurize", f"features/{name}.parquet"))
        for context, name in (("training", "train"), ("validation", "valid"))
    }
    rows = trained["info"]["rows"]
    for role, run in _runs(trained).items():
        inputs = dataset_inputs(run)
        assert {(context, d.name, d.digest) for context, d, _ in inputs} == expected, role
        assert {tags["fraudops.digest_source"] for _, _, tags in inputs} == {"dvc"}
        assert run.data.tags["fraudops.role"] == role
        for _, dataset, _ in inputs:
            assert dataset.source_type == "local"
            assert json.loads(dataset.source)["uri"] == f"features/{dataset.name}.parquet"
            profile = json.loads(dataset.profile)  # counted, never the rows themselves
            assert profile["num_rows"] == rows[dataset.name]
            assert 0 < profile["frauds"] < profile["num_rows"]
            columns = {c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]}
            assert columns >= {*FEATURE_NAMES, "is_fraud", "weight"}


def test_runs_share_the_parent_run_of_their_airflow_dag_run(trained):
    from mlflow import MlflowClient

    from training.lib import tracking

    client, info = MlflowClient(trained["uri"]), trained["info"]
    parents = {run.data.tags.get("mlflow.parentRunId") for run in _runs(trained).values()}
    assert parents == {info["parent_run_id"]}
    parent = client.get_run(info["parent_run_id"])
    key = f"airflow:fraud_training/{DAG_RUN}"
    assert info["pipeline_run"] == key
    assert parent.data.tags["fraudops.pipeline_run"] == key
    assert parent.data.tags["fraudops.role"] == "pipeline"
    assert parent.data.tags["airflow.dag_run_id"] == DAG_RUN
    assert parent.info.status == "FINISHED" and parent.inputs.dataset_inputs == []
    for run in _runs(trained).values():
        assert run.data.tags["fraudops.pipeline_run"] == key
    # A later stage (or a retry) of the same DAG run finds the parent; another run does not.
    same = {"AIRFLOW_CTX_DAG_ID": "fraud_training", "AIRFLOW_CTX_DAG_RUN_ID": DAG_RUN}
    other = {**same, "AIRFLOW_CTX_DAG_RUN_ID": f"{DAG_RUN}-next"}
    found = {
        name: tracking.pipeline_parent(info["experiment_id"], tracking.pipeline_of(env, "unused"))
        for name, env in (("same", same), ("other", other))
    }
    assert found["same"] == parent.info.run_id != found["other"]


def test_a_run_by_hand_is_keyed_by_commit_params_and_data():
    """Outside Airflow the parent is named by what the run trains on: a retry with the same
    commit, params and data joins it, a change of any starts another."""
    from training.lib.tracking import local_pipeline_key, pipeline_of

    key = local_pipeline_key("c0ffee" * 7, TINY, "d" * 32)
    assert key == local_pipeline_key("c0ffee" * 7, dict(TINY), "d" * 32)
    assert key != local_pipeline_key("c0ffee" * 7, {**TINY, "seed": 8}, "d" * 32)
    assert key != local_pipeline_key("c0ffee" * 7, TINY, "e" * 32)
    assert key != local_pipeline_key("beef" * 10, TINY, "d" * 32)
    assert pipeline_of({}, key).key == f"local:{key}"
    assert pipeline_of({"AIRFLOW_CTX_DAG_ID": "fraud_training"}, key).key == f"local:{key}"


def test_the_experiment_opens_on_its_runs(trained):
    """MLflow 3's UI opens an experiment of the model-training kind on its runs; a kind set
    by hand (in the UI) is kept."""
    from mlflow import MlflowClient

    from training.lib import tracking

    client = MlflowClient(trained["uri"])
    tags = client.get_experiment(trained["info"]["experiment_id"]).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    chosen = f"test-kind-{uuid.uuid4().hex[:8]}"
    client.create_experiment(chosen, tags={"mlflow.experimentKind": "genai_development"})
    experiment_id = tracking.use_experiment(trained["uri"], chosen)
    assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "genai_development"


def test_train_writes_the_candidate_directory(trained):
    info, out = trained["info"], trained["dir"]
    assert {p.name for p in out.iterdir()} >= {
        "model.keras", "baseline.joblib", "ablation.joblib", "train.json",
    }  # fmt: skip
    assert json.loads((out / "train.json").read_text()) == info
    for key in ("mlflow_run_id", "baseline_run_id", "experiment_id", "data_hash", "labels"):
        assert info[key] is not None
    assert 0.0 <= info["thresholds"]["challenge"] <= info["thresholds"]["block"] <= 1.0
    assert all(len(info["explain"][k]) == N_FEATURES for k in ("mean", "std", "weight"))
    assert info["feature_names"] == list(FEATURE_NAMES)
    assert info["metrics"]["valid_pr_auc"] > 0.5
    assert info["inputs"]["balances_optional"] and info["inputs"]["missing_balance_share"] == 0.3
    assert info["synthesizer_quality"] == {
        "legit": {"overall": 0.95, "column_shapes": 0.96},
        "fraud": {"overall": 0.97, "column_shapes": 0.95},
    }


def test_train_logs_keras_and_baseline_runs_with_the_same_metric_names(trained):
    from mlflow import MlflowClient

    client = MlflowClient(trained["uri"])
    info = trained["info"]
    keras_run = client.get_run(info["mlflow_run_id"])
    baseline_run = client.get_run(info["baseline_run_id"])
    assert keras_run.info.experiment_id == baseline_run.info.experiment_id == info["experiment_id"]
    assert set(keras_run.data.metrics) >= AGREED_METRICS
    assert set(baseline_run.data.metrics) >= AGREED_METRICS
    assert {"ablation_valid_pr_auc", "ablation_valid_recall_at_fpr"} <= set(keras_run.data.metrics)
    epochs = client.get_metric_history(keras_run.info.run_id, "epoch_val_pr_auc")
    assert len(epochs) == keras_run.data.metrics["epochs_trained"]
    for run in (keras_run, baseline_run):
        assert run.data.tags["data_hash"] == info["data_hash"]
        assert run.data.tags["labels_count"] == "0"
        assert "git_commit" in run.data.tags
    assert keras_run.data.tags["fraudops.role"] == "candidate"
    assert keras_run.data.metrics["synthesizer_fraud_overall"] == 0.97
    plots = {a.path for a in client.list_artifacts(keras_run.info.run_id, "plots")}
    assert plots == {"plots/valid_pr_curve.png", "plots/valid_bands.png"}
    assert keras_run.data.params["hidden_units"] == "[16, 8]"
    logged = client.search_logged_models(experiment_ids=[info["experiment_id"]])
    assert {m.source_run_id for m in logged} == {keras_run.info.run_id, baseline_run.info.run_id}


@pytest.fixture(scope="module")
def candidate(trained):
    import keras

    return keras.models.load_model(trained["dir"] / "model.keras")


def _features(**tx) -> np.ndarray:
    base = {"user_id": 1, "timestamp": 1_700_000_000 + 12 * 3600, "is_unauthorized_overdraft": 0.0}
    return batch_features({k: [v] for k, v in {**base, **tx}.items()})  # a user's first


def test_draining_the_origin_into_a_mule_scores_higher_than_a_payment(candidate):
    """Direction: same amount, but one empties the account into a zero-balance mule."""
    from training.lib.model import predict

    drain = _features(
        type="TRANSFER", amount=25_000.0, old_balance_orig=25_000.0, new_balance_orig=0.0,
        old_balance_dest=0.0, new_balance_dest=0.0,
    )  # fmt: skip
    payment = _features(
        type="PAYMENT", amount=25_000.0, old_balance_orig=90_000.0, new_balance_orig=65_000.0,
        old_balance_dest=0.0, new_balance_dest=0.0,
    )  # fmt: skip
    assert predict(candidate, drain)[0] > predict(candidate, payment)[0]


def test_scores_are_probabilities_after_the_prior_correction(candidate, features_dir):
    """Class weighting inflates scores; the corrected model's mean score tracks the fraud
    rate instead (within a factor of two on this small set)."""
    import pandas as pd

    from training.lib.model import predict

    valid = pd.read_parquet(features_dir / "valid.parquet")
    scores = predict(candidate, valid[list(FEATURE_NAMES)].to_numpy(np.float32))
    rate = valid["is_fraud"].mean()
    assert rate / 2 < scores.mean() < rate * 2


def test_thresholds_hold_their_false_positive_rates_on_valid(candidate, trained, features_dir):
    import pandas as pd

    from training.lib.model import predict

    valid = pd.read_parquet(features_dir / "valid.parquet")
    legit = valid[valid["is_fraud"] == 0]
    scores = predict(candidate, legit[list(FEATURE_NAMES)].to_numpy(np.float32))
    thresholds = trained["info"]["thresholds"]
    assert (scores >= thresholds["block"]).mean() <= TINY["block_fpr"]
    assert (scores >= thresholds["challenge"]).mean() <= TINY["challenge_fpr"]


def test_cli_refuses_missing_features_with_a_clear_error(tmp_path, capsys):
    from training.train import main

    params = tmp_path / "params.yaml"
    params.write_text("train:\n  experiment: unused\n")
    with pytest.raises(SystemExit) as refused:
        main(["--features", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c"),
              "--params", str(params)])  # fmt: skip
    assert refused.value.code == 1
    assert "train.parquet: missing (run featurize first)" in capsys.readouterr().err


def test_the_pipeline_run_records_what_triggered_it():
    """fraud_training's tasks name their trigger (an asset's URI or the run type) in the
    environment; the parent run carries it as a tag."""
    from jobs.common import DRIFT_ASSET_URI, TRIGGER_ENV
    from training.lib.tracking import TAG_TRIGGER, pipeline_of

    env = {"AIRFLOW_CTX_DAG_ID": "fraud_training", "AIRFLOW_CTX_DAG_RUN_ID": "r1"}
    assert pipeline_of({**env, TRIGGER_ENV: DRIFT_ASSET_URI}, "k").tags[TAG_TRIGGER] == (
        DRIFT_ASSET_URI
    )
    assert TAG_TRIGGER not in pipeline_of(env, "k").tags
