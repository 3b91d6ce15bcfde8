"""train stage: fit the candidate (a Keras MLP, training.lib.model) and the yardsticks it is
judged against, and record all of them in MLflow.

- candidate: early-stopped on validation PR-AUC; frauds class-weighted (see training.lib.model),
  combined with the per-row weights featurize set (live feedback counts more); the class
  weight is divided back out of the output bias so scores stay probabilities.
- baseline: sklearn HistGradientBoostingClassifier on the same features and weights, logged
  as its own MLflow run with the same metric names, side by side with the candidate.
- ablation: the same GBT without the balance-derived features (DESIGN 5b: PaySim balances
  leak the label), its own run and reported in the candidate's run as `ablation_valid_*`, so
  a near-perfect number fools no one.
- band thresholds calibrated on valid by false-positive rate; the `explain` block for
  fraudops.bands.Explainer (mean/std and a logistic regression on standardised features).

The three runs are children of the pipeline run's parent (training.lib.tracking: the Airflow
DAG run, or the commit/params/data of a run by hand) and carry the train and valid sets as
dataset inputs (contexts `training`, `validation`, digest = DVC's md5 of the file).

Writes models/candidate/{model.keras, baseline.joblib, ablation.joblib, train.json}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import joblib
import mlflow
import mlflow.keras
import mlflow.sklearn
import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from fraudops.features import BALANCE_FEATURES, FEATURE_NAMES, mask_balances, model_inputs
from fraudops.params import DEFAULT_PARAMS, load_params
from fraudops.pii import configure_logging
from fraudops.settings import load_settings
from training.featurize import META_FILE, SPLITS
from training.lib import metrics, tracking

log = logging.getLogger(__name__)

KERAS_FILE, BASELINE_FILE, ABLATION_FILE, TRAIN_INFO = (
    "model.keras",
    "baseline.joblib",
    "ablation.joblib",
    "train.json",
)
SKOPS_TRUSTED = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]
ABLATION_FEATURES = tuple(n for n in FEATURE_NAMES if n not in BALANCE_FEATURES)
ABLATION_COLUMNS = [FEATURE_NAMES.index(n) for n in ABLATION_FEATURES]


class TrainError(ValueError):
    """The features cannot be trained on (missing file, one class only, ...)."""


def load_split(features_dir: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features (float32), labels (int8) and row weights (float32) of one split."""
    path = Path(features_dir) / f"{name}.parquet"
    if not path.is_file():
        raise TrainError(f"{path}: missing (run featurize first)")
    frame = pd.read_parquet(path, columns=[*FEATURE_NAMES, "is_fraud", "weight"])
    y = frame["is_fraud"].to_numpy(np.int8)
    if name in ("train", "valid") and not 0 < y.sum() < len(y):
        raise TrainError(f"{path}: needs both frauds and legitimate rows, has {y.sum()} frauds")
    x = np.ascontiguousarray(frame[list(FEATURE_NAMES)].to_numpy(np.float32))
    return x, y, frame["weight"].to_numpy(np.float32)


def with_missing_balances(split: tuple, share: float, seed: int) -> tuple:
    """The split with the balances of a random `share` of its rows marked missing, as a
    card payment's are, so one model learns to score traffic with and without them."""
    x, y, w = split
    if share <= 0:
        return split
    rows = np.random.default_rng(seed).random(len(y)) < share
    return mask_balances(x, rows), y, w


def class_weighted(y: np.ndarray, w: np.ndarray, power: float) -> tuple[np.ndarray, float]:
    """Row weights times the fraud class weight (legit/fraud weighted counts)^power."""
    ratio = float(w[y == 0].sum() / w[y == 1].sum())
    positive_weight = ratio**power
    return np.where(y == 1, w * positive_weight, w).astype(np.float32), positive_weight


def fit_gbt(x: np.ndarray, y: np.ndarray, sw: np.ndarray, params: dict, seed: int):
    """The gradient-boosted-trees yardstick, fixed size (no random inner split), seeded.

    Regularised (large leaves, L2) so that it learns the traffic, not the synthesizer's
    artefacts in the balance columns: a straw-man baseline would make the gate meaningless.

    OpenMP threads are capped (`threads`): idle OpenMP workers busy-wait, and beside other
    processes on a few cores that turns a fit of seconds into minutes."""
    model = HistGradientBoostingClassifier(
        max_iter=int(params["max_iter"]),
        learning_rate=float(params["learning_rate"]),
        max_leaf_nodes=int(params["max_leaf_nodes"]),
        min_samples_leaf=int(params["min_samples_leaf"]),
        l2_regularization=float(params["l2_regularization"]),
        early_stopping=False,
        random_state=seed,
    )
    with threadpool_limits(int(params["threads"])):
        return model.fit(x, y, sample_weight=sw)


def fit_explainer(x: np.ndarray, y: np.ndarray, sw: np.ndarray, rows: int, seed: int) -> dict:
    """model.json `explain`: training mean/std and a logistic regression's weights on
    standardised features (a linear surrogate, so reasons are cheap and stable)."""
    mean, std = x.mean(axis=0, dtype=np.float64), x.std(axis=0, dtype=np.float64)
    pick = np.random.default_rng(seed).permutation(len(x))[:rows]
    z = (x[pick] - mean) / np.where(std > 0, std, 1.0)
    surrogate = LogisticRegression(max_iter=500).fit(z, y[pick], sample_weight=sw[pick])
    return {
        "mean": mean.astype(float).tolist(),
        "std": std.astype(float).tolist(),
        "weight": surrogate.coef_[0].astype(float).tolist(),
    }


def _callbacks(patience: int) -> list:
    """Early stopping on validation PR-AUC (the headline metric, not the loss), a smaller
    step once it stalls, and per-epoch metrics to the active MLflow run."""
    import keras

    return [
        keras.callbacks.EarlyStopping(
            monitor="val_pr_auc", mode="max", patience=patience, restore_best_weights=True
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_pr_auc", mode="max", factor=0.3, patience=1, min_lr=1e-5
        ),
        keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: mlflow.log_metrics(
                {f"epoch_{k}": float(v) for k, v in logs.items()}, step=epoch
            )
        ),
    ]


def fit_keras(train: tuple, valid: tuple, params: dict[str, Any]):
    """Build and fit the MLP; per-epoch metrics go to the active MLflow run.

    Returns (model, history dict, positive weight). Deterministic for a given seed: seeded
    Python/numpy/TF generators and TF's deterministic op implementations."""
    import keras
    import tensorflow as tf

    from training.lib.model import build_model, correct_prior

    keras.utils.set_random_seed(int(params["seed"]))
    tf.config.experimental.enable_op_determinism()
    (x, y, w), (xv, yv, _) = train, valid
    sw, positive_weight = class_weighted(y, w, float(params["positive_weight_power"]))
    model = build_model(
        x,
        hidden_units=params["hidden_units"],
        dropout=float(params["dropout"]),
        learning_rate=float(params["learning_rate"]),
        initial_rate=float(sw[y == 1].sum() / sw.sum()),
    )
    history = model.fit(
        x,
        y.astype(np.float32),
        sample_weight=sw,
        validation_data=(xv, yv.astype(np.float32)),
        epochs=int(params["max_epochs"]),
        batch_size=int(params["batch_size"]),
        callbacks=_callbacks(int(params["patience"])),
        shuffle=True,
        verbose=0,
    )
    correct_prior(model, positive_weight)
    return model, history.history, positive_weight


def pr_curve_figure(labels: np.ndarray, curves: dict[str, np.ndarray], title: str):
    """Precision-recall curves of several models on one labelled set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig, ax = plt.subplots(figsize=(6, 5))
    for name, scores in curves.items():
        precision, recall, _ = precision_recall_curve(labels, scores)
        ap = average_precision_score(labels, scores)
        ax.plot(recall, precision, label=f"{name} (PR-AUC {ap:.3f})")
    ax.set(xlabel="recall", ylabel="precision", title=title)
    ax.legend(loc="lower left")
    return fig


def band_confusion_figure(labels: np.ndarray, scores: np.ndarray, thresholds: dict):
    """Confusion matrix of true class against risk band (rows x ALLOW/CHALLENGE/BLOCK)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fraudops.bands import BANDS, bands_for

    band = bands_for(scores, thresholds)
    counts = np.array([[np.sum((labels == c) & (band == b)) for b in range(3)] for c in (0, 1)])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.imshow(np.log1p(counts), cmap="Blues")
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, f"{n:,}", ha="center", va="center")
    ax.set_xticks(range(3), BANDS)
    ax.set_yticks(range(2), ["legit", "fraud"])
    ax.set(xlabel="band", ylabel="true class", title="Valid set by band")
    return fig


def _log_figure(fig, name: str) -> None:
    import matplotlib.pyplot as plt

    mlflow.log_figure(fig, f"plots/{name}.png")
    plt.close(fig)


def _requirements(*packages: str) -> list[str]:
    """Pinned requirements for a logged model; giving them skips MLflow's inference, which
    reloads the model in a subprocess and costs several seconds per run."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in packages]


def baseline_run(train: tuple, valid: tuple, params: dict, runs: tracking.RunContext) -> dict:
    """Fit and log the GBT baseline as its own run; the valid metrics share the candidate's
    names. Returns run id, model, thresholds and valid scores."""
    (x, y, w), (xv, yv, _) = train, valid
    sw, _ = class_weighted(y, w, float(params["positive_weight_power"]))
    with runs.start("gbt-baseline", "baseline"):
        mlflow.log_params(tracking.flatten_params(params["baseline"], "baseline."))
        started = time.perf_counter()
        model = fit_gbt(x, y, sw, params["baseline"], int(params["seed"]))
        fit_seconds = time.perf_counter() - started
        scores = model.predict_proba(xv)[:, 1]
        thresholds = _thresholds(yv, scores, params)
        mlflow.log_metrics(_valid_metrics(yv, scores, thresholds) | {"fit_seconds": fit_seconds})
        _log_figure(band_confusion_figure(yv, scores, thresholds), "valid_bands")
        started = time.perf_counter()
        mlflow.sklearn.log_model(
            model,
            name="model",
            pip_requirements=_requirements("scikit-learn"),
            skops_trusted_types=SKOPS_TRUSTED,  # our own fit, not a downloaded file
        )
        mlflow.log_metric("log_model_seconds", time.perf_counter() - started)
        run_id = mlflow.active_run().info.run_id
    log.info("baseline fitted in %.1fs", fit_seconds)
    return {"run_id": run_id, "model": model, "thresholds": thresholds, "scores": scores}


def _thresholds(labels: np.ndarray, scores: np.ndarray, params: dict) -> dict[str, float]:
    return metrics.calibrate_thresholds(
        labels, scores, float(params["challenge_fpr"]), float(params["block_fpr"])
    )


def _valid_metrics(labels: np.ndarray, scores: np.ndarray, thresholds: dict) -> dict:
    return metrics.flat_metrics(metrics.summarize(labels, scores, thresholds), "valid")


def ablation_run(train: tuple, valid: tuple, params: dict, runs: tracking.RunContext) -> dict:
    """The GBT without balance-derived features: what the model is worth without the leak.
    Its own run with the baseline's params and metric names (no logged model: it is never
    served), so the UI compares it with the others."""
    (x, y, w), (xv, yv, _) = train, valid
    sw, _ = class_weighted(y, w, float(params["positive_weight_power"]))
    with runs.start("gbt-no-balance", "ablation"):
        mlflow.log_params(tracking.flatten_params(params["baseline"], "baseline."))
        mlflow.log_param("features", ",".join(ABLATION_FEATURES))
        started = time.perf_counter()
        model = fit_gbt(x[:, ABLATION_COLUMNS], y, sw, params["baseline"], int(params["seed"]))
        fit_seconds = time.perf_counter() - started
        scores = model.predict_proba(xv[:, ABLATION_COLUMNS])[:, 1]
        thresholds = _thresholds(yv, scores, params)
        mlflow.log_metrics(_valid_metrics(yv, scores, thresholds) | {"fit_seconds": fit_seconds})
        run_id = mlflow.active_run().info.run_id
    return {"run_id": run_id, "model": model, "thresholds": thresholds, "scores": scores}


def _log_candidate(model, valid: tuple, scores: np.ndarray, thresholds: dict, others: dict):
    """The candidate run's plots (PR curves of all three models, bands) and the Keras model;
    the model logging time is a metric, since it counts against the pipeline budget."""
    yv = valid[1]
    curves = {
        "keras": scores,
        "gbt": others["baseline"]["scores"],
        "gbt no balance": others["ablation"]["scores"],
    }
    _log_figure(pr_curve_figure(yv, curves, "Precision-recall on valid"), "valid_pr_curve")
    _log_figure(band_confusion_figure(yv, scores, thresholds), "valid_bands")
    started = time.perf_counter()
    mlflow.keras.log_model(
        model,
        name="model",
        signature=mlflow.models.infer_signature(valid[0][:5], scores[:5].reshape(-1, 1)),
        pip_requirements=_requirements("tensorflow", "keras"),
    )
    mlflow.log_metric("log_model_seconds", time.perf_counter() - started)


def keras_run(
    train: tuple, valid: tuple, params: dict, runs: tracking.RunContext, others: dict
) -> dict:
    """Fit and log the candidate: params, per-epoch metrics, valid metrics (its own, and
    the ablation's as `ablation_valid_*`), plots and the Keras model."""
    from training.lib.model import predict

    yv, ablation = valid[1], others["ablation"]
    with runs.start("keras-mlp", "candidate"):
        skip = ("baseline", "experiment")
        mlflow.log_params(
            tracking.flatten_params({k: v for k, v in params.items() if k not in skip})
        )
        started = time.perf_counter()
        model, history, positive_weight = fit_keras(train, valid, params)
        fit_seconds = time.perf_counter() - started
        scores = predict(model, valid[0])
        thresholds = _thresholds(yv, scores, params)
        valid_metrics = _valid_metrics(yv, scores, thresholds)
        ablation_metrics = _valid_metrics(yv, ablation["scores"], ablation["thresholds"])
        mlflow.log_metrics(
            valid_metrics
            | {f"ablation_{k}": v for k, v in ablation_metrics.items()}
            | {"fit_seconds": fit_seconds, "positive_weight": positive_weight}
            | {"epochs_trained": len(history["loss"])}
            | {"best_epoch": int(np.argmax(history["val_pr_auc"]))}
        )
        _log_candidate(model, valid, scores, thresholds, others)
        run_id = mlflow.active_run().info.run_id
    log.info("keras fitted in %.1fs over %d epochs", fit_seconds, len(history["loss"]))
    return {
        "run_id": run_id,
        "model": model,
        "thresholds": thresholds,
        "metrics": valid_metrics,
        "positive_weight": positive_weight,
    }


def _read_json(path: Path | None) -> dict[str, Any] | None:
    return json.loads(Path(path).read_text()) if path and Path(path).is_file() else None


def _lineage(features_dir: Path, meta: dict) -> dict[str, str]:
    """Tags every run of this training carries: data hash, commit, which labels were used."""
    labels = meta.get("labels", {})
    tags = {
        tracking.TAG_DATA_HASH: tracking.files_hash(
            p for s in SPLITS if (p := Path(features_dir) / f"{s}.parquet").is_file()
        ),
        tracking.TAG_GIT_COMMIT: tracking.git_commit() or "none",
        "labels_count": str(labels.get("count", 0)),
        "labels_window": f"{labels.get('window_start')}..{labels.get('window_end')}",
    }
    return tags


def _run_context(
    features_dir: Path, params: dict, tags: dict, experiment_id: str, environ: Mapping[str, str]
) -> tracking.RunContext:
    """What the three runs share: lineage tags, the pipeline run's parent (the Airflow DAG
    run this task belongs to, else named by commit, params and data), the two datasets."""
    local_key = tracking.local_pipeline_key(
        tags[tracking.TAG_GIT_COMMIT], params, tags[tracking.TAG_DATA_HASH]
    )
    pipeline = tracking.pipeline_of(environ, local_key)
    parent = tracking.pipeline_parent(experiment_id, pipeline)
    splits = {"training": "train", "validation": "valid"}
    inputs = tracking.split_inputs(
        {context: Path(features_dir) / f"{name}.parquet" for context, name in splits.items()}
    )
    return tracking.RunContext(
        {**tags, tracking.TAG_PIPELINE_RUN: pipeline.key}, parent, tuple(inputs)
    )


def synthesizer_summary(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The SDV quality scores per class (overall, column shapes, pair trends), without the
    per-column and per-segment detail."""
    if report is None:
        return None
    quality = report.get("quality", {})
    return {
        cls: {k: v for k, v in scores.items() if isinstance(v, int | float)}
        for cls, scores in quality.items()
        if isinstance(scores, dict)
    }


def _synthesizer_metrics(summary: dict[str, Any] | None) -> dict[str, float]:
    """The summary as candidate-run metrics, e.g. `synthesizer_fraud_overall`."""
    return {
        f"synthesizer_{cls}_{k}": float(v)
        for cls, scores in (summary or {}).items()
        for k, v in scores.items()
    }


@contextmanager
def _timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    """Record a phase's wall time: train.json keeps them, for the pipeline's time budget."""
    started = time.perf_counter()
    yield
    seconds[name] = round(time.perf_counter() - started, 1)


def _train_info(fits: dict[str, Any], meta: dict, tags: dict, rows: dict) -> dict[str, Any]:
    """train.json: lineage, thresholds, explain block and what export/promote need."""
    candidate, baseline, ablation = fits["candidate"], fits["baseline"], fits["ablation"]
    return {
        "mlflow_run_id": candidate["run_id"],
        "baseline_run_id": baseline["run_id"],
        "experiment_id": fits["experiment_id"],
        "experiment": fits["experiment"],
        "pipeline_run": fits["runs"].tags[tracking.TAG_PIPELINE_RUN],
        "parent_run_id": fits["runs"].parent_run_id,
        "data_hash": tags[tracking.TAG_DATA_HASH],
        "git_commit": tracking.git_commit(),
        "feature_names": list(FEATURE_NAMES),
        "thresholds": candidate["thresholds"],
        "baseline_thresholds": baseline["thresholds"],
        "ablation": {
            "run_id": ablation["run_id"],
            "features": list(ABLATION_FEATURES),
            "thresholds": ablation["thresholds"],
        },
        "explain": fits["explain"],
        "positive_weight": candidate["positive_weight"],
        "metrics": candidate["metrics"],
        "labels": meta.get("labels", {"count": 0, "window_start": None, "window_end": None}),
        "validation": meta.get("validation", {}),
        "synthesizer_quality": fits["synthesizer"],
        "rows": rows,
        "seconds": fits["seconds"],
    }


def train(
    features_dir: Path,
    out_dir: Path,
    params: dict[str, Any],
    tracking_uri: str,
    synthesizer_report: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Fit candidate, baseline and ablation; log to MLflow; write the candidate directory.

    `environ` is the process environment, read for the Airflow DAG run (none: a run by
    hand). Returns train.json's content."""
    seconds: dict[str, float] = {}
    with _timed(seconds, "load"):
        train_set, valid_set = load_split(features_dir, "train"), load_split(features_dir, "valid")
        share, seed = float(params["missing_balance_share"]), int(params["seed"])
        train_set = with_missing_balances(train_set, share, seed)
        valid_set = with_missing_balances(valid_set, share, seed + 1)
        meta = _read_json(Path(features_dir) / META_FILE) or {}
        tags = _lineage(features_dir, meta)
    fits: dict[str, Any] = {"experiment": params["experiment"], "seconds": seconds}
    fits["experiment_id"] = tracking.use_experiment(tracking_uri, params["experiment"])
    fits["synthesizer"] = synthesizer_summary(_read_json(synthesizer_report))
    with _timed(seconds, "datasets"):
        runs = _run_context(features_dir, params, tags, fits["experiment_id"], environ or {})
    fits["runs"] = runs
    with _timed(seconds, "baseline"):
        fits["baseline"] = baseline_run(train_set, valid_set, params, runs)
    with _timed(seconds, "ablation"):
        fits["ablation"] = ablation_run(train_set, valid_set, params, runs)
    with _timed(seconds, "keras"):
        fits["candidate"] = keras_run(train_set, valid_set, params, runs, fits)
    with _timed(seconds, "explain"):
        weights = class_weighted(train_set[1], train_set[2], float(params["positive_weight_power"]))
        fits["explain"] = fit_explainer(
            train_set[0], train_set[1], weights[0], int(params["explain_rows"]), int(params["seed"])
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _timed(seconds, "save"):
        fits["candidate"]["model"].save(out_dir / KERAS_FILE)
        joblib.dump(fits["baseline"]["model"], out_dir / BASELINE_FILE)
        joblib.dump(fits["ablation"]["model"], out_dir / ABLATION_FILE)
    tracking.log_to_run(fits["candidate"]["run_id"], _synthesizer_metrics(fits["synthesizer"]))
    rows = {"train": len(train_set[1]), "valid": len(valid_set[1])}
    info = _train_info(fits, meta, tags, rows)
    info["inputs"] = model_inputs(float(params["missing_balance_share"]))
    (out_dir / TRAIN_INFO).write_text(json.dumps(info, indent=2))
    log.info("candidate written to %s; seconds per phase %s", out_dir, seconds)
    return info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, required=True, help="featurize's out dir")
    parser.add_argument("--out", type=Path, required=True, help="candidate model directory")
    parser.add_argument(
        "--synthesizer-report", type=Path, help="SDV quality report to record (optional)"
    )
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    args = parser.parse_args(argv)
    configure_logging()
    params = load_params(args.params, "train")
    tracking_uri = load_settings().mlflow_tracking_uri
    try:
        train(args.features, args.out, params, tracking_uri, args.synthesizer_report, os.environ)
    except TrainError as err:
        log.error("train refused: %s", err)
        raise SystemExit(1) from err


if __name__ == "__main__":
    main()
