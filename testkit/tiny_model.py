"""A tiny but real TFLite fraud model with a proper model.json, for the serving tests and
the benchmark.

Built with TensorFlow, so it runs in its own process (`python testkit/tiny_model.py
OUT_ROOT v1 v2:7:2.0`): the serving code under test must never share a process with TensorFlow. The
model is a small dense network whose weights are seeded, so the same seed gives the
same model; a different `--bias` shifts every score, so a test can tell two models apart
by their outputs as well as by their version names.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fraudops.features import FEATURE_NAMES, N_FEATURES  # noqa: E402
from fraudops.modelspec import MODEL_FILE, now_iso, write_spec  # noqa: E402

THRESHOLDS = {"challenge": 0.5, "block": 0.8}


def build_tflite(seed: int, bias: float) -> bytes:
    """Keras Dense(8) -> Dense(1, sigmoid) converted to TFLite with a dynamic batch."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input(shape=(N_FEATURES,), dtype=tf.float32, name="features")
    hidden = tf.keras.layers.Dense(8, activation="relu")(inputs)
    dense = tf.keras.layers.Dense(1, activation="sigmoid", bias_initializer="zeros")
    model = tf.keras.Model(inputs, dense(hidden))
    weights, _ = dense.get_weights()
    dense.set_weights([weights, np.full((1,), bias, dtype=np.float32)])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    return converter.convert()


def golden_set(tflite: bytes, seed: int) -> dict:
    """Golden inputs and the outputs this very model gives for them."""
    from ai_edge_litert.interpreter import Interpreter

    inputs = np.random.default_rng(seed).normal(size=(8, N_FEATURES)).astype(np.float32)
    interp = Interpreter(model_content=tflite)
    idx = interp.get_input_details()[0]["index"]
    interp.resize_tensor_input(idx, list(inputs.shape))
    interp.allocate_tensors()
    interp.set_tensor(idx, inputs)
    interp.invoke()
    outputs = interp.get_tensor(interp.get_output_details()[0]["index"]).reshape(-1)
    return {"inputs": inputs.tolist(), "outputs": outputs.tolist(), "tolerance": 1e-4}


def build_model_dir(out_dir: Path, version: str, seed: int = 7, bias: float = 0.0) -> Path:
    """Write `out_dir/model.tflite` and a model.json that passes fraudops.modelspec."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tflite = build_tflite(seed, bias)
    (out_dir / MODEL_FILE).write_bytes(tflite)
    rng = np.random.default_rng(seed + 1)
    spec = {
        "version": version,
        "mlflow_run_id": f"test-run-{version}",
        "data_hash": "test",
        "git_commit": "test",
        "created_at": now_iso(),
        "published_at": now_iso(),
        "feature_names": list(FEATURE_NAMES),
        "input": {"dtype": "float32", "shape": [-1, N_FEATURES]},
        "thresholds": THRESHOLDS,
        "metrics": {"pr_auc": 0.5},
        "golden": golden_set(tflite, seed),
        "explain": {
            "mean": [0.0] * N_FEATURES,
            "std": [1.0] * N_FEATURES,
            "weight": rng.uniform(0.1, 1.0, size=N_FEATURES).round(3).tolist(),
        },
    }
    write_spec(out_dir, spec)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    """Build one or more models in one process (TensorFlow's import is the slow part)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_root", type=Path)
    parser.add_argument(
        "models", nargs="+", help="VERSION[:SEED[:BIAS]], each built into out_root/VERSION"
    )
    args = parser.parse_args(argv)
    built = []
    for item in args.models:
        version, seed, bias = (item.split(":") + ["7", "0.0"])[:3]
        build_model_dir(args.out_root / version, version, int(seed), float(bias))
        built.append(version)
    print(json.dumps({"out_root": str(args.out_root), "versions": built}))


if __name__ == "__main__":
    main()
