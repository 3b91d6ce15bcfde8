"""featurize stage: the shared feature transform (fraudops.features.batch_features) over
the synthetic training data, the held-out reference and the analysts' labelled live
transactions, written as the train / valid / test / feedback sets the later stages read.

- train / valid: split by time (the last `valid_fraction` of the time span is valid), so
  validation looks like the future the model will face. Velocity features are computed on
  the whole synthetic set first, so the first valid rows still see their users' history.
- test: the held-out reference (never seen by the synthesizer), featurized on its own.
- feedback: labelled live transactions, merged into train and also written alone, with
  the champion's score and version, so evaluate can ask what the candidate fixes. Each
  row's weight follows its label kind (fraudops.label_kinds): `feedback_weight` for an
  analyst's verdict, `delayed_weight` for chargebacks, claims and matured transactions.
  Analysts only see the alerts the queue put in front of them, a sample biased toward
  what the serving model already flags; weighting it far above the delayed labels makes
  the next model fit the reviewed rows instead of the traffic.
- recent: the newest `recent_fraction` of the live labels by the time they were given
  (labelled_at), kept out of train: neither the candidate nor the champion, trained
  before those labels existed, has seen them, so promote compares the two on them.

The stage refuses to run when the validation stage says the batch failed.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fraudops.features import FEATURE_NAMES, batch_features
from fraudops.label_kinds import FEEDBACK, label_kind
from fraudops.params import DEFAULT_PARAMS, load_params
from fraudops.pii import configure_logging
from fraudops.schema import TRANSACTION_COLUMNS
from training.lib.split import split_by_time, time_cutoff

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test", "feedback", "recent")
META_FILE = "meta.json"
KEEP_COLUMNS = ("transaction_id", "timestamp", "is_fraud", "weight")
FEEDBACK_EXTRA = ("champion_score", "model_version")


class FeaturizeError(ValueError):
    """The inputs cannot be featurized (failed validation, missing columns, ...)."""


def check_validation(result_path: Path) -> dict[str, Any]:
    """The validation result, or FeaturizeError when it is missing or says the batch failed."""
    try:
        result = json.loads(Path(result_path).read_text())
    except FileNotFoundError as err:
        raise FeaturizeError(f"{result_path}: validation result missing; run validate") from err
    except json.JSONDecodeError as err:
        raise FeaturizeError(f"{result_path}: unreadable validation result ({err})") from err
    if result.get("success") is not True:
        failed = result.get("failed", [])
        raise FeaturizeError(f"{result_path}: the batch failed validation: {failed}")
    return result


def read_transactions(path: Path) -> pd.DataFrame:
    """A dataset in the data contract, sorted by time; a clear error if columns are missing."""
    if not Path(path).exists():
        raise FeaturizeError(f"{path}: no such file")
    df = pd.read_parquet(path)
    missing = [c for c in TRANSACTION_COLUMNS if c not in df.columns]
    if missing:
        raise FeaturizeError(f"{path}: missing columns {missing}")
    return df.sort_values("timestamp", kind="stable").reset_index(drop=True)


def feature_frame(df: pd.DataFrame, weight: float = 1.0) -> pd.DataFrame:
    """FEATURE_NAMES (float32) plus transaction_id, timestamp, is_fraud and weight."""
    features = pd.DataFrame(batch_features(df), columns=list(FEATURE_NAMES), index=df.index)
    features["transaction_id"] = df["transaction_id"].astype(str)
    features["timestamp"] = df["timestamp"].astype(np.int64)
    features["is_fraud"] = df["is_fraud"].astype(np.int8)
    features["weight"] = np.float32(weight)
    return features


def _read_feedback(path: Path | None) -> pd.DataFrame:
    """The feedback file, or an empty frame of the same shape when there is none yet."""
    if path is not None and Path(path).exists():
        df = read_transactions(path)
    else:
        log.info("no feedback file at %s: training without live labels", path)
        df = pd.DataFrame({c: pd.Series(dtype=object) for c in TRANSACTION_COLUMNS})
        df = df.astype({"user_id": np.int64, "timestamp": np.int64, "is_fraud": np.int8})
        df["label"] = pd.Series(dtype=object)
    for column, missing in (("score", np.nan), ("model_version", None)):
        if column not in df.columns:
            df[column] = missing
    return df


def _label_window(labelled: pd.DataFrame) -> dict[str, Any]:
    """How many live labels were used, and the span they cover (labelled_at if known)."""
    if labelled.empty:
        return {"count": 0, "window_start": None, "window_end": None}
    if "labelled_at" in labelled.columns and labelled["labelled_at"].notna().any():
        when = pd.to_datetime(labelled["labelled_at"], utc=True)
    else:
        when = pd.to_datetime(labelled["timestamp"], unit="s", utc=True)
    return {
        "count": len(labelled),
        "window_start": when.min().isoformat(),
        "window_end": when.max().isoformat(),
    }


def kind_weights(df: pd.DataFrame, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(label kind, row weight) per row: the file's label_kind, else the kind of its
    label_source, else feedback (a file from before sources were kept)."""
    if "label_kind" in df.columns:
        kinds = df["label_kind"].fillna(FEEDBACK).astype(str)
    elif "label_source" in df.columns:
        kinds = df["label_source"].fillna("").astype(str).map(label_kind)
    else:
        kinds = pd.Series(FEEDBACK, index=df.index)
    weights = np.where(
        kinds == FEEDBACK, float(params["feedback_weight"]), float(params["delayed_weight"])
    )
    return kinds.to_numpy(object), weights.astype(np.float32)


def feedback_set(path: Path | None, params: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Features of the labelled live transactions, with champion_score, model_version,
    label_kind, labelled_at (Unix seconds) and the kind's weight.

    Velocity features are computed over every row in the file before unlabelled rows are
    dropped, so context rows (if collect_feedback provides them) give users their history.
    The analyst's `label` (FRAUD / LEGIT) wins over the is_fraud recorded at scoring time;
    a file without a label column counts every row, labelled by is_fraud."""
    df = _read_feedback(path)
    if "label" in df.columns:
        df["is_fraud"] = (df["label"] == "FRAUD").astype(np.int8)
    frame = feature_frame(df)
    frame["label_kind"], frame["weight"] = kind_weights(df, params)
    frame["champion_score"] = df["score"].astype(np.float64)
    frame["model_version"] = df["model_version"].astype(object)
    frame["labelled_at"] = _labelled_seconds(df)
    if "label" in df.columns:
        labelled = df["label"].notna().to_numpy()
        frame, df = frame[labelled], df[labelled]
    return frame.reset_index(drop=True), _label_window(df)


def _labelled_seconds(df: pd.DataFrame) -> np.ndarray:
    """When each label was given, in Unix seconds (the transaction's time if unknown)."""
    if "labelled_at" not in df.columns or df.empty:
        return df["timestamp"].to_numpy(np.int64)
    when = pd.to_datetime(df["labelled_at"], utc=True)
    seconds = (when - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.fillna(df["timestamp"]).to_numpy(np.int64)


def recent_split(feedback: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(older, recent) live labels: recent is the last `fraction` of the labelled_at span
    (training/lib/split.py's rule). 0 keeps nothing back; so do labels all given at once."""
    if not 0.0 <= fraction < 1.0:
        raise FeaturizeError(f"featurize.recent_fraction must be in [0, 1), got {fraction}")
    when = feedback["labelled_at"].to_numpy(np.int64)
    if fraction == 0.0 or feedback.empty or when.min() == when.max():
        return feedback, feedback.iloc[:0]
    recent = when >= time_cutoff(int(when.min()), int(when.max()), fraction)
    return feedback[~recent].reset_index(drop=True), feedback[recent].reset_index(drop=True)


def _kind_counts(frame: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(n) for k, n in frame["label_kind"].value_counts().sort_index().items()}


def _train_valid(frame: pd.DataFrame, params: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The time split (training/lib/split.py): the last `valid_fraction` of the span is valid."""
    try:
        return split_by_time(frame, float(params["valid_fraction"]), "featurize.valid_fraction")
    except ValueError as err:
        raise FeaturizeError(str(err)) from err


def featurize(
    train_path: Path,
    holdout_path: Path,
    feedback_path: Path | None,
    validation_path: Path,
    out_dir: Path,
    params: dict[str, Any],
) -> dict[str, Any]:
    """Write train/valid/test/feedback parquet files and meta.json; return the meta."""
    validation = check_validation(validation_path)
    train, valid = _train_valid(feature_frame(read_transactions(train_path)), params)
    test = feature_frame(read_transactions(holdout_path))
    feedback, labels = feedback_set(feedback_path, params)
    older, recent = recent_split(feedback, float(params["recent_fraction"]))
    if not older.empty:
        train = pd.concat([train, older[train.columns]], ignore_index=True)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sets = {"train": train, "valid": valid, "test": test, "feedback": feedback, "recent": recent}
    for name, frame in sets.items():
        frame.to_parquet(out_dir / f"{name}.parquet", index=False)
    meta = {
        "rows": {name: len(frame) for name, frame in sets.items()},
        "frauds": {name: int(frame["is_fraud"].sum()) for name, frame in sets.items()},
        "valid_from": int(valid["timestamp"].min()),
        "labels": labels,
        "label_kinds": {"train": _kind_counts(older), "recent": _kind_counts(recent)},
        "label_weights": {
            "feedback": float(params["feedback_weight"]),
            "delayed": float(params["delayed_weight"]),
        },
        "validation": {
            "success": True,
            "failed": validation.get("failed", []),
            "report": str(validation_path),
        },
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2))
    log.info("featurized: %s", meta["rows"])
    return meta


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True, help="synthetic training data")
    parser.add_argument("--holdout", type=Path, required=True, help="held-out reference data")
    parser.add_argument("--feedback", type=Path, help="labelled live transactions (optional)")
    parser.add_argument("--validation", type=Path, required=True, help="validate's result.json")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    args = parser.parse_args(argv)
    configure_logging()
    params = load_params(args.params, "featurize")
    try:
        featurize(args.train, args.holdout, args.feedback, args.validation, args.out_dir, params)
    except FeaturizeError as err:
        log.error("featurize refused: %s", err)
        raise SystemExit(1) from err


if __name__ == "__main__":
    main()
