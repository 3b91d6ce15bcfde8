"""export: turn the trained Keras candidate into the artifact the scorer serves.

Converts `model.keras` to TFLite (float32; dynamic-range quantisation only when asked for
*and* it keeps parity), scores the test features with the scorer's own runner
(`fraudops.runner.TfliteRunner`: same interpreter, batch buckets and thread count) and holds
it to the Keras outputs within `export.parity_tolerance`. Measures per-transaction latency
of that runner beside Keras, and writes `model.tflite` + a full `model.json` (version
"candidate" until promote publishes it) and a report that promote's gate reads.

    python -m training.export --candidate models/candidate --features data/features \
        --out models/export --report reports/export.json [--params params.yaml]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fraudops.features import FEATURE_NAMES, N_FEATURES
from fraudops.modelspec import MODEL_FILE, now_iso, write_spec
from fraudops.params import DEFAULT_PARAMS, load_params
from fraudops.pii import configure_logging
from fraudops.runner import ModelRejected, TfliteRunner, check_signature
from fraudops.schema import LABEL_COLUMN

log = logging.getLogger("fraudops.export")

KERAS_FILE = "model.keras"
TRAIN_INFO = "train.json"
TEST_FILE = "test.parquet"
PARITY_BATCH = 4096


class ExportError(RuntimeError):
    """The candidate cannot be exported: bad input, or TFLite disagrees with Keras."""


def convert(model: Any, quantize: bool) -> bytes:
    """TFLite flatbuffer of a Keras model; the batch dimension stays dynamic."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def keras_predict(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=PARITY_BATCH, verbose=0)).reshape(-1)


def parity(reference: np.ndarray, tflite: np.ndarray, tolerance: float) -> dict[str, Any]:
    diff = np.abs(reference.astype(np.float64) - tflite.astype(np.float64))
    worst = float(diff.max()) if diff.size else 0.0
    return {
        "rows": int(diff.size),
        "max_abs_diff": worst,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "tolerance": tolerance,
        "passed": bool(diff.size) and worst <= tolerance,
    }


def convert_checked(
    model: Any, x: np.ndarray, reference: np.ndarray, params: dict[str, Any]
) -> tuple[bytes, dict[str, Any], str]:
    """Convert, quantised first when asked; keep quantisation only if it holds parity.

    Returns (flatbuffer, parity result, quantisation used). A float32 model that fails
    parity is an export failure: the scorer would not serve what was evaluated."""
    tolerance = float(params["parity_tolerance"])
    if params["quantize"]:
        model_bytes = convert(model, quantize=True)
        check = parity(reference, TfliteRunner(model_bytes).run(x), tolerance)
        if check["passed"]:
            return model_bytes, check, "dynamic_range"
        log.warning(
            "dynamic-range quantisation breaks parity (max abs diff %.3g > %.3g): "
            "exporting float32 instead",
            check["max_abs_diff"],
            tolerance,
        )
    model_bytes = convert(model, quantize=False)
    check = parity(reference, TfliteRunner(model_bytes).run(x), tolerance)
    return model_bytes, check, "none"


def _timings_us(fn: Callable[[], Any], runs: int) -> np.ndarray:
    fn()  # warm-up: first calls pay for allocation and tracing
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter_ns()
        fn()
        times[i] = (time.perf_counter_ns() - start) / 1000.0
    return times


def latency_profile(single: Callable[[], Any], batch: Callable[[], Any], runs: int, rows: int):
    """Per-transaction cost: median and p99 of one-row calls, and per row of a batch."""
    one = _timings_us(single, runs)
    many = _timings_us(batch, max(runs // 10, 5))
    return {
        "batch1_median_us": round(float(np.median(one)), 2),
        "batch1_p99_us": round(float(np.percentile(one, 99)), 2),
        f"batch{rows}_per_row_us": round(float(np.median(many)) / rows, 3),
    }


def measure_latency(
    model_bytes: bytes, model: Any, x: np.ndarray, params: dict[str, Any]
) -> dict[str, Any]:
    """The scorer's runner side by side with Keras predict() and a direct Keras call.

    The TFLite figures are what a request pays inside the scorer: one `TfliteRunner.run`
    call (copy in, pad to its bucket, invoke on one interpreter thread, copy out)."""
    rows = int(params["latency_batch"])
    one = np.ascontiguousarray(x[:1], dtype=np.float32)
    many = np.ascontiguousarray(np.resize(x, (rows, N_FEATURES)), dtype=np.float32)
    runner = TfliteRunner(model_bytes)
    keras_runs = int(params["keras_latency_runs"])
    return {
        "tflite": latency_profile(
            lambda: runner.run(one),
            lambda: runner.run(many),
            int(params["latency_runs"]),
            rows,
        ),
        "keras_predict": latency_profile(
            lambda: model.predict(one, verbose=0),
            lambda: model.predict(many, batch_size=rows, verbose=0),
            keras_runs,
            rows,
        ),
        "keras_call": latency_profile(
            lambda: model(one, training=False),
            lambda: model(many, training=False),
            keras_runs,
            rows,
        ),
    }


def golden_rows(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of ~n test rows for the golden set, up to half of them fraud, so the
    scorer's load check covers high scores as well as the everyday low ones."""
    rng = np.random.default_rng(seed)
    fraud = np.flatnonzero(labels == 1)
    legit = np.flatnonzero(labels != 1)
    take_fraud = min(len(fraud), n // 2)
    picked = np.concatenate(
        [
            rng.choice(fraud, take_fraud, replace=False),
            rng.choice(legit, min(len(legit), n - take_fraud), replace=False),
        ]
    )
    return np.sort(picked.astype(np.int64))


def git_commit(cwd: Path | None = None) -> str | None:
    """The commit the pipeline ran from (None outside a git work tree)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def load_test_set(features_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The test split's features (FEATURE_NAMES order, float32) and labels."""
    path = Path(features_dir) / TEST_FILE
    if not path.is_file():
        raise ExportError(f"{path}: missing (run featurize first)")
    frame = pd.read_parquet(path)
    missing = [c for c in (*FEATURE_NAMES, LABEL_COLUMN) if c not in frame.columns]
    if missing:
        raise ExportError(f"{path}: missing columns {missing}")
    if frame.empty:
        raise ExportError(f"{path}: no rows")
    x = frame[list(FEATURE_NAMES)].to_numpy(dtype=np.float32)
    return np.ascontiguousarray(x), frame[LABEL_COLUMN].to_numpy()


def load_candidate(candidate_dir: Path) -> tuple[Any, dict[str, Any]]:
    """The Keras model and its train.json; the model must take the feature vector."""
    import keras

    model_path, info_path = Path(candidate_dir) / KERAS_FILE, Path(candidate_dir) / TRAIN_INFO
    for path in (model_path, info_path):
        if not path.is_file():
            raise ExportError(f"{path}: missing (run train first)")
    info = json.loads(info_path.read_text())
    missing = [k for k in ("mlflow_run_id", "data_hash", "thresholds", "explain") if k not in info]
    if missing:
        raise ExportError(f"{info_path}: missing keys {missing}")
    model = keras.models.load_model(model_path, compile=False)
    if tuple(model.input_shape[1:]) != (N_FEATURES,):
        raise ExportError(
            f"{model_path}: input shape {model.input_shape}, want (None, {N_FEATURES})"
        )
    return model, info


def build_spec(
    info: dict[str, Any], input_shape: list[int], golden: dict[str, Any], export: dict[str, Any]
) -> dict[str, Any]:
    """model.json as exported; promote adds registered_version, publish sets version and
    published_at."""
    return {
        "version": "candidate",
        "registered_version": None,
        "mlflow_run_id": info["mlflow_run_id"],
        "mlflow_experiment_id": info.get("experiment_id"),
        "data_hash": info["data_hash"],
        "git_commit": info.get("git_commit") or git_commit(),
        "created_at": now_iso(),
        "published_at": None,
        "feature_names": list(FEATURE_NAMES),
        "inputs": info.get("inputs"),
        "input": {"dtype": "float32", "shape": input_shape},
        "output": {"dtype": "float32", "shape": [-1, 1], "meaning": "probability of fraud"},
        "thresholds": info["thresholds"],
        "explain": info["explain"],
        "metrics": info.get("metrics", {}),
        "golden": golden,
        "labels": info.get("labels", {"count": 0, "window_start": None, "window_end": None}),
        "validation": info.get("validation", {}),
        "export": export,
    }


def golden_set(
    runner: TfliteRunner, x: np.ndarray, labels: np.ndarray, params: dict[str, Any]
) -> dict[str, Any]:
    """Inputs and this TFLite model's own outputs: what the scorer checks on load."""
    rows = golden_rows(labels, int(params["golden_rows"]), int(params["seed"]))
    inputs = x[rows]
    return {
        "inputs": inputs.tolist(),
        "outputs": runner.run(inputs).astype(float).tolist(),
        "tolerance": float(params["golden_tolerance"]),
    }


def export_model(
    candidate_dir: Path, features_dir: Path, out_dir: Path, report_path: Path, params: dict
) -> dict[str, Any]:
    """Convert, check parity, measure latency, write the artifact; returns the report.

    The report is written even when parity fails (to show by how much), then ExportError."""
    x, labels = load_test_set(features_dir)
    model, info = load_candidate(candidate_dir)
    reference = keras_predict(model, x)
    model_bytes, check, quantization = convert_checked(model, x, reference, params)
    try:
        input_shape = check_signature(model_bytes)
    except ModelRejected as err:
        raise ExportError(f"the scorer would reject the TFLite model: {err}") from err
    report: dict[str, Any] = {
        "parity": check,
        "quantization": quantization,
        "model_bytes": len(model_bytes),
        "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
    }
    report_path.parent.mkdir(parents=True, exist_ok=True)
    if not check["passed"]:
        report_path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        raise ExportError(
            f"TFLite disagrees with Keras on the test set: max abs diff "
            f"{check['max_abs_diff']:.3g} > tolerance {check['tolerance']:.3g}"
        )
    report["latency"] = measure_latency(model_bytes, model, x, params)
    golden = golden_set(TfliteRunner(model_bytes), x, labels, params)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MODEL_FILE).write_bytes(model_bytes)
    write_spec(out_dir, build_spec(info, input_shape, golden, report))
    report_path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export the candidate to TFLite, checked.")
    parser.add_argument("--candidate", type=Path, required=True, help="models/candidate")
    parser.add_argument("--features", type=Path, required=True, help="data/features")
    parser.add_argument("--out", type=Path, required=True, help="models/export")
    parser.add_argument("--report", type=Path, required=True, help="reports/export.json")
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    configure_logging()
    params = load_params(args.params, "export")
    try:
        report = export_model(args.candidate, args.features, args.out, args.report, params)
    except ExportError as err:
        log.error("export failed: %s", err)
        return 1
    tfl, keras_call = report["latency"]["tflite"], report["latency"]["keras_call"]
    log.info(
        "exported %s (%s, %d bytes): parity max abs diff %.2g; batch-1 latency TFLite "
        "median %.1f us p99 %.1f us, Keras call median %.1f us",
        args.out / MODEL_FILE,
        report["quantization"],
        report["model_bytes"],
        report["parity"]["max_abs_diff"],
        tfl["batch1_median_us"],
        tfl["batch1_p99_us"],
        keras_call["batch1_median_us"],
    )
    print(json.dumps(report["latency"], indent=2), file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
