"""evaluate stage: every model on the same held-out test set (the reference holdout the
synthesizer never saw), and on analysts' feedback when there is any.

Models: the candidate (Keras), the GBT baseline, the no-balance-features ablation, and the
current champion: the model the scorers serve from the served-model directory
(`FRAUDOPS_MODEL_DIR`, the one they watch), loaded through the scorer's checked loader and
scored by its TFLite runner (`fraudops.runner`); null when none is published. Each gets
PR-AUC, ROC-AUC, recall at `evaluate.fpr` false-positive rate, alert precision P@k (the
mean over days of the fraud share among each day's k highest scores, k = the review queue's
`queue.daily_budget`) and per-band precision/recall at its own thresholds.

On the recent window (featurize's recent.parquet: the newest live labels, which neither the
candidate nor the champion trained on) candidate, baseline and champion are all re-scored
on the same rows: `recent` in the report, what promote's fresh-traffic check reads.

On feedback the champion is judged by the scores it actually served (champion_score), and
the report counts how many of its false positives and missed frauds the candidate now gets
right, and how many new mistakes it makes, at the challenge and block lines.

reports/metrics.json (a DVC metric, read by promote) holds at top level `candidate`,
`baseline`, `ablation`, `champion` (each a metrics summary with `pr_auc`), `feedback`,
`recent`, `champion_rejected` (newer publications the scorer refuses) and
`candidate_run_id`. The PR
curves go to `<plots>/pr_curve.csv` (recall, and the precision of each model at that
recall) for DVC plots. Everything is logged to the candidate's run, and the baseline's and
the ablation's test metrics to their own runs under the same names; each of the three runs
gets the held-out set as a dataset input (context `test`) and the feedback set, when there
is one (context `feedback`).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from fraudops.features import FEATURE_NAMES, mask_balances, mask_location
from fraudops.modelspec import published_versions
from fraudops.params import DEFAULT_PARAMS, load_params
from fraudops.pii import configure_logging
from fraudops.runner import LoadedModel, newest_valid
from fraudops.settings import load_settings
from training.lib import metrics, tracking
from training.train import ABLATION_COLUMNS, ABLATION_FILE, BASELINE_FILE, KERAS_FILE, TRAIN_INFO

log = logging.getLogger(__name__)

PR_CURVE_FILE = "pr_curve.csv"
CURVE_MODELS = ("candidate", "baseline", "ablation")
LIVE_SETS = ("feedback", "recent")


class EvaluateError(ValueError):
    """Evaluation inputs are missing or unusable."""


def load_set(features_dir: Path, name: str) -> pd.DataFrame | None:
    """A featurized split; None for an absent live-label file (test must exist)."""
    path = Path(features_dir) / f"{name}.parquet"
    if not path.is_file():
        if name in LIVE_SETS:
            return None
        raise EvaluateError(f"{path}: missing (run featurize first)")
    return pd.read_parquet(path)


def features_of(frame: pd.DataFrame) -> np.ndarray:
    return np.ascontiguousarray(frame[list(FEATURE_NAMES)].to_numpy(np.float32))


def current_champion(serving_dir: Path) -> tuple[LoadedModel | None, list[dict[str, str]]]:
    """The model the scorers serve (the newest publication that passes the scorer's own
    checks, `fraudops.runner.load_model`, or None), and each newer publication the scorer
    rejects: those are reported, never scored, so evaluate judges the model that serves."""
    champion, rejected = newest_valid(serving_dir)
    for version, problem in rejected:
        log.warning("published %s is not served (the scorer rejects it): %s", version, problem)
    return champion, [{"version": v, "problem": p} for v, p in rejected]


def candidate_scorers(candidate_dir: Path, batch: int) -> dict[str, Any]:
    """Score functions for the candidate, the baseline and the ablation, plus train.json."""
    import keras

    from training.lib.model import predict

    candidate_dir = Path(candidate_dir)
    for name in (KERAS_FILE, BASELINE_FILE, ABLATION_FILE, TRAIN_INFO):
        if not (candidate_dir / name).is_file():
            raise EvaluateError(f"{candidate_dir / name}: missing (run train first)")
    model = keras.models.load_model(candidate_dir / KERAS_FILE, compile=False)
    baseline = joblib.load(candidate_dir / BASELINE_FILE)
    ablation = joblib.load(candidate_dir / ABLATION_FILE)
    return {
        "info": json.loads((candidate_dir / TRAIN_INFO).read_text()),
        "candidate": lambda x: predict(model, x, batch),
        "baseline": lambda x: baseline.predict_proba(x)[:, 1],
        "ablation": lambda x: ablation.predict_proba(x[:, ABLATION_COLUMNS])[:, 1],
    }


def model_thresholds(info: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each candidate-side model's own band thresholds, as train calibrated them on valid."""
    return {
        "candidate": info["thresholds"],
        "baseline": info["baseline_thresholds"],
        "ablation": info["ablation"]["thresholds"],
    }


def served_thresholds(
    versions: pd.Series, published: list[tuple[str, dict]], champion: LoadedModel | None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per feedback row, the thresholds of the model version that scored it (the current
    champion's when that version is no longer published); mask of rows with any."""
    by_version = {v: spec["thresholds"] for v, spec in published}
    fallback = champion.thresholds if champion else None
    rows = [by_version.get(v, fallback) for v in versions]
    known = np.array([t is not None for t in rows], dtype=bool)
    arrays = {
        level: np.array([t[level] if t else np.nan for t in rows], dtype=np.float64)
        for level in ("challenge", "block")
    }
    return arrays, known


def corrections(
    labels: np.ndarray,
    served: np.ndarray,
    served_t: dict[str, np.ndarray],
    candidate: np.ndarray,
    candidate_t: dict[str, float],
) -> dict[str, dict[str, int]]:
    """At each line (challenge, block): the champion's false positives and missed frauds,
    how many of them the candidate gets right, and the new mistakes it would make."""
    legit, fraud = labels == 0, labels == 1
    out = {}
    for level in ("challenge", "block"):
        champ = served >= served_t[level]
        cand = candidate >= candidate_t[level]
        out[level] = {
            "champion_false_positives": int((legit & champ).sum()),
            "fixed_by_candidate": int((legit & champ & ~cand).sum()),
            "champion_missed_frauds": int((fraud & ~champ).sum()),
            "caught_by_candidate": int((fraud & ~champ & cand).sum()),
            "new_false_positives": int((legit & ~champ & cand).sum()),
            "new_missed_frauds": int((fraud & champ & ~cand).sum()),
        }
    return out


def _summaries(
    frame: pd.DataFrame, scores: dict[str, np.ndarray], thresholds: dict, params: dict
) -> dict[str, Any]:
    """Each model's summary on one labelled frame, P@k per day of the frame's timestamps."""
    labels, when = frame["is_fraud"].to_numpy(np.int8), frame["timestamp"].to_numpy(np.int64)
    fpr, k = float(params["fpr"]), int(params["daily_budget"])
    return {
        name: metrics.summarize(labels, s, thresholds[name], fpr, when, k)
        for name, s in scores.items()
    }


def feedback_report(
    frame: pd.DataFrame | None,
    scorers: dict[str, Any],
    serving_dir: Path,
    champion: LoadedModel | None,
    params: dict[str, Any],
) -> dict[str, Any] | None:
    """Metrics on the labelled live transactions; None when there are none yet."""
    if frame is None or frame.empty:
        return None
    labels, x = frame["is_fraud"].to_numpy(np.int8), features_of(frame)
    fpr, thresholds = float(params["fpr"]), model_thresholds(scorers["info"])
    scores = {name: scorers[name](x) for name in ("candidate", "baseline")}
    report: dict[str, Any] = _summaries(frame, scores, thresholds, params)
    report.update(rows=len(labels), frauds=int(labels.sum()), champion=None, corrections=None)
    published = published_versions(serving_dir) if Path(serving_dir).is_dir() else []
    served_t, known = served_thresholds(frame["model_version"], published, champion)
    known &= frame["champion_score"].notna().to_numpy()
    if known.any():
        served = frame["champion_score"].to_numpy(np.float64)[known]
        row_t = {k: v[known] for k, v in served_t.items()}
        champ = metrics.summarize(labels[known], served, row_t, fpr)
        champ["thresholds"] = "per served model_version"
        report["champion"] = champ
        report["corrections"] = corrections(
            labels[known], served, row_t, scores["candidate"][known], thresholds["candidate"]
        )
    return report


def without_balances_report(
    test: pd.DataFrame, scorers: dict[str, Any], params: dict
) -> dict[str, Any]:
    """The candidate on the held-out rows as a card payment would send them: no balances."""
    x = features_of(test)
    masked = {"candidate": scorers["candidate"](mask_balances(x, np.ones(len(x), bool)))}
    return _summaries(test, masked, model_thresholds(scorers["info"]), params)["candidate"]


def without_location_report(
    test: pd.DataFrame, scorers: dict[str, Any], params: dict
) -> dict[str, Any]:
    """The candidate on the held-out rows with their location unknown (no IP address, no
    card country): what location adds is the difference to the candidate's own report."""
    masked = {"candidate": scorers["candidate"](mask_location(features_of(test)))}
    return _summaries(test, masked, model_thresholds(scorers["info"]), params)["candidate"]


def holdout_report(
    test: pd.DataFrame,
    scorers: dict[str, Any],
    champion: LoadedModel | None,
    params: dict,
    names: tuple[str, ...] = CURVE_MODELS,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Summaries of the `names` models and of the champion (None without one) on one
    labelled set, every model re-scored on it, and the scores behind them."""
    x = features_of(test)
    thresholds = model_thresholds(scorers["info"])
    scores = {name: scorers[name](x) for name in names}
    report: dict[str, Any] = _summaries(test, scores, thresholds, params)
    report["champion"] = None
    if champion is not None:
        scores["champion"] = champion.predict(x)
        champ = {"champion": champion.thresholds}
        summary = _summaries(test, {"champion": scores["champion"]}, champ, params)["champion"]
        report["champion"] = {"version": champion.version, **summary}
    return report, scores


def recent_report(
    frame: pd.DataFrame | None, scorers: dict[str, Any], champion: LoadedModel | None, params
) -> dict[str, Any] | None:
    """Candidate, baseline and champion on the newest live labels none of them trained on;
    None without such a window or when it holds one class only (nothing to rank)."""
    if frame is None or not 0 < int(frame["is_fraud"].sum()) < len(frame):
        return None
    report, _ = holdout_report(frame, scorers, champion, params, ("candidate", "baseline"))
    report.update(rows=len(frame), frauds=int(frame["is_fraud"].sum()))
    return report


def write_pr_curves(labels: np.ndarray, scores: dict[str, np.ndarray], plots_dir: Path) -> Path:
    """Interpolated PR curves on one recall grid: `recall,<model>_precision...` for DVC."""
    columns = {"recall": metrics.RECALL_GRID}
    for name in CURVE_MODELS:
        columns[f"{name}_precision"] = metrics.interpolated_precision(labels, scores[name])
    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    path = plots_dir / PR_CURVE_FILE
    pd.DataFrame(columns).round(6).to_csv(path, index=False)
    return path


def mlflow_metrics(report: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """(candidate run metrics, baseline run metrics): `test_*` for the run's own model in
    both runs, prefixed copies for the other models, `feedback_*` on live labels."""
    cand = metrics.flat_metrics(report["candidate"], "test")
    base = metrics.flat_metrics(report["baseline"], "test")
    cand |= metrics.flat_metrics(report["baseline"], "baseline_test")
    cand |= metrics.flat_metrics(report["ablation"], "ablation_test")
    cand |= metrics.flat_metrics(report["candidate_without_balances"], "no_balances_test")
    cand |= metrics.flat_metrics(report["candidate_without_location"], "no_location_test")
    if report["champion"]:
        cand |= metrics.flat_metrics(report["champion"], "champion_test")
    if recent := report.get("recent"):
        cand |= metrics.flat_metrics(recent["candidate"], "recent")
        base |= metrics.flat_metrics(recent["baseline"], "recent")
        if recent["champion"]:
            cand |= metrics.flat_metrics(recent["champion"], "champion_recent")
    feedback = report["feedback"]
    if feedback:
        cand |= metrics.flat_metrics(feedback["candidate"], "feedback")
        base |= metrics.flat_metrics(feedback["baseline"], "feedback")
        if feedback["champion"]:
            cand |= metrics.flat_metrics(feedback["champion"], "champion_feedback")
        for level, counts in (feedback["corrections"] or {}).items():
            cand |= {f"feedback_{level}_{k}": float(v) for k, v in counts.items()}
    return cand, base


def log_to_mlflow(
    report: dict[str, Any],
    info: dict[str, Any],
    artifacts: list[Path],
    features_dir: Path,
    tracking_uri: str,
) -> None:
    """Metrics, artifacts and the evaluation sets (as dataset inputs) to the runs train made.
    A candidate from before the ablation had its own run has no ablation run id."""
    sets = {"test": Path(features_dir) / "test.parquet"}
    for name in LIVE_SETS:
        if report.get(name):
            sets[name] = Path(features_dir) / f"{name}.parquet"
    inputs = tracking.split_inputs(sets)
    tracking.use_experiment(tracking_uri, info["experiment"])
    cand_metrics, base_metrics = mlflow_metrics(report)
    tracking.log_to_run(info["mlflow_run_id"], cand_metrics, artifacts=artifacts, inputs=inputs)
    tracking.log_to_run(info["baseline_run_id"], base_metrics, inputs=inputs)
    if ablation_run_id := info["ablation"].get("run_id"):
        ablation = metrics.flat_metrics(report["ablation"], "test")
        tracking.log_to_run(ablation_run_id, ablation, inputs=inputs)


def evaluate(
    features_dir: Path,
    candidate_dir: Path,
    serving_dir: Path,
    out: Path,
    plots_dir: Path,
    params: dict[str, Any],
    tracking_uri: str,
) -> dict[str, Any]:
    """Score every model, write metrics.json and the PR curve file, log them to MLflow."""
    test = load_set(features_dir, "test")
    if test.empty or not 0 < test["is_fraud"].sum() < len(test):
        raise EvaluateError(f"{features_dir}/test.parquet: needs frauds and legitimate rows")
    scorers = candidate_scorers(candidate_dir, int(params["score_batch"]))
    champion, rejected = current_champion(serving_dir)
    report, scores = holdout_report(test, scorers, champion, params)
    report["candidate_without_balances"] = without_balances_report(test, scorers, params)
    report["candidate_without_location"] = without_location_report(test, scorers, params)
    report["champion_rejected"] = rejected
    feedback = load_set(features_dir, "feedback")
    report["feedback"] = feedback_report(feedback, scorers, serving_dir, champion, params)
    report["recent"] = recent_report(load_set(features_dir, "recent"), scorers, champion, params)
    info = scorers["info"]
    report["candidate_run_id"] = info["mlflow_run_id"]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    curves = write_pr_curves(test["is_fraud"].to_numpy(np.int8), scores, plots_dir)
    log_to_mlflow(report, info, [out, curves], features_dir, tracking_uri)
    log.info(
        "test PR-AUC: candidate %.4f (without balances %.4f, without location %.4f), "
        "baseline %.4f, ablation %.4f, champion %s",
        report["candidate"]["pr_auc"],
        report["candidate_without_balances"]["pr_auc"],
        report["candidate_without_location"]["pr_auc"],
        report["baseline"]["pr_auc"],
        report["ablation"]["pr_auc"],
        report["champion"]["pr_auc"] if report["champion"] else None,
    )
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--candidate", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="metrics.json")
    parser.add_argument("--plots", type=Path, required=True, help="directory for plot data")
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    args = parser.parse_args(argv)
    configure_logging()
    params = load_params(args.params, "evaluate")
    params["daily_budget"] = load_params(args.params, "queue")["daily_budget"]
    settings = load_settings()
    serving, uri = settings.model_dir, settings.mlflow_tracking_uri
    try:
        evaluate(args.features, args.candidate, serving, args.out, args.plots, params, uri)
    except EvaluateError as err:
        log.error("evaluate refused: %s", err)
        raise SystemExit(1) from err


if __name__ == "__main__":
    main()
