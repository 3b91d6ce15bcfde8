"""A tiny but real trained candidate, as the train stage leaves it, for export/promote tests.

Writes `<project>/models/candidate/{model.keras, train.json}` and
`<project>/data/features/test.parquet`. Built with TensorFlow, so it runs in its own process
(`python tests/helpers/tiny_candidate.py PROJECT --run-id RUN`): tests of the serving code
share the pytest process and must never see TensorFlow imported.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fraudops.features import FEATURE_NAMES, N_FEATURES  # noqa: E402


def features_frame(rows: int, seed: int) -> pd.DataFrame:
    """Random standardised features with ~10% fraud that depends on the first feature."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, N_FEATURES)).astype(np.float32)
    label = (x[:, 0] + 0.5 * rng.normal(size=rows) > 1.3).astype(np.int8)
    frame = pd.DataFrame(x, columns=list(FEATURE_NAMES))
    frame["is_fraud"] = label
    frame["weight"] = np.float32(1.0)
    frame["transaction_id"] = [f"t{i}" for i in range(rows)]
    return frame


def build_model(frame: pd.DataFrame, seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(N_FEATURES,), name="features")
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(hidden))
    model.compile(optimizer="adam", loss="binary_crossentropy")
    x = frame[list(FEATURE_NAMES)].to_numpy(np.float32)
    model.fit(x, frame["is_fraud"].to_numpy(np.float32), epochs=2, batch_size=64, verbose=0)
    return model


def train_info(run_id: str) -> dict:
    return {
        "mlflow_run_id": run_id,
        "experiment_id": "0",
        "data_hash": "md5-test-data",
        "thresholds": {"challenge": 0.3, "block": 0.7},
        "explain": {
            "mean": [0.0] * N_FEATURES,
            "std": [1.0] * N_FEATURES,
            "weight": [0.1] * N_FEATURES,
        },
        "metrics": {"valid_pr_auc": 0.5},
        "labels": {"count": 0, "window_start": None, "window_end": None},
        "validation": {"success": True, "failed": []},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("project", type=Path)
    parser.add_argument("--run-id", default="no-run")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    features = args.project / "data" / "features"
    candidate = args.project / "models" / "candidate"
    features.mkdir(parents=True, exist_ok=True)
    candidate.mkdir(parents=True, exist_ok=True)
    frame = features_frame(args.rows, args.seed)
    frame.to_parquet(features / "test.parquet", index=False)
    frame.to_parquet(features / "train.parquet", index=False)  # export's drift reference
    build_model(frame, args.seed).save(candidate / "model.keras")
    (candidate / "train.json").write_text(json.dumps(train_info(args.run_id), indent=2))
    print(json.dumps({"candidate": str(candidate), "features": str(features)}))


if __name__ == "__main__":
    main()
