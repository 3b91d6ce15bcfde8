"""The registered `fraud-detector` as an MLflow model, so that
`mlflow.pyfunc.load_model("models:/fraud-detector@champion")` and
`mlflow models serve -m models:/fraud-detector@champion --env-manager local` score raw
transactions. MLflow loads a version by running `fraudops/mlflow_entry.py` (models from
code: nothing is pickled), which builds the FraudDetector defined here; serving never
imports this module, since it needs mlflow and pandas.

The model's one artifact is the directory the scorer serves (`model.tflite` and
`model.json`, byte for byte), loaded by the scorer's checked loader and scored by its
runner (`fraudops.runner`) after the one feature transform (`fraudops.features`).

Input: a DataFrame of raw transactions with the TransactionRequest fields (balances,
`is_unauthorized_overdraft` and `channel` may be left out: they default to the proto's
zero values; `is_fraud` is ignored). Output, one row per transaction in input order:
`transaction_id`, `score` (probability of fraud), `band` (ALLOW / CHALLENGE / BLOCK at the
model.json thresholds) and `model_version`.

Per-user velocity features (counts and sums over the last hour and day, time since the
previous transaction) are computed over the rows of the request only, each user's rows in
time order: the batch transform. The scorer's per-user state spans all live traffic, so a
user's score matches the scorer's when the request holds that user's history (the scorer
fed the same rows from a fresh state gives the same scores)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from fraudops.bands import BANDS, bands_for
from fraudops.features import batch_features
from fraudops.runner import LoadedModel, load_model
from fraudops.schema import (
    LOCATION_COLUMNS,
    STRIPE_ID_COLUMNS,
    VALIDATED_COLUMNS,
    validate_columns,
)

ARTIFACT = "model"  # context.artifacts key of the served model directory
# Fields a TransactionRequest may leave unset, with the value proto3 gives them.
DEFAULTS: dict[str, Any] = {
    "old_balance_orig": 0.0,
    "new_balance_orig": 0.0,
    "old_balance_dest": 0.0,
    "new_balance_dest": 0.0,
    "is_unauthorized_overdraft": 0.0,
    "channel": "",
    "balances_missing": False,
    **dict.fromkeys(STRIPE_ID_COLUMNS, ""),
    **dict.fromkeys(LOCATION_COLUMNS, ""),  # empty: location unknown
}
MAX_ERRORS_SHOWN = 5


def transaction_columns(frame: pd.DataFrame) -> dict[str, list[Any]]:
    """The validated fields as plain Python lists (the schema's rules are typed on Python
    values), with unset optional fields at their proto3 defaults."""
    missing = [c for c in VALIDATED_COLUMNS if c not in frame.columns and c not in DEFAULTS]
    if missing:
        raise ValueError(f"missing transaction fields: {', '.join(missing)}")
    cols: dict[str, list[Any]] = {}
    for name in VALIDATED_COLUMNS:
        if name in frame.columns:
            cols[name] = frame[name].tolist()
        else:
            cols[name] = [DEFAULTS[name]] * len(frame)
    return cols


def score_frame(model: LoadedModel, frame: pd.DataFrame) -> pd.DataFrame:
    """Score raw transactions; a transaction that breaks the schema fails the request,
    naming its row and field."""
    cols = transaction_columns(frame)
    errors = validate_columns(cols)
    if errors:
        shown = "; ".join(f"row {i}: {err}" for i, err in errors[:MAX_ERRORS_SHOWN])
        raise ValueError(f"{len(errors)} invalid transaction(s): {shown}")
    scores = model.predict(batch_features(cols))
    bands = bands_for(scores, model.thresholds)
    return pd.DataFrame(
        {
            "transaction_id": cols["transaction_id"],
            "score": scores.astype(np.float64),
            "band": [BANDS[b] for b in bands.tolist()],
            "model_version": model.version,
        }
    )


class FraudDetector(mlflow.pyfunc.PythonModel):
    """The served TFLite model behind MLflow's pyfunc interface."""

    def load_context(self, context) -> None:
        self.model = load_model(Path(context.artifacts[ARTIFACT]), prewarm=1)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return score_frame(self.model, pd.DataFrame(model_input))


def signature() -> ModelSignature:
    """Raw TransactionRequest fields in; transaction_id, score, band, model_version out."""
    kinds = {"transaction_id": "string", "user_id": "long", "timestamp": "long"}
    kinds |= {"type": "string", "channel": "string", "balances_missing": "boolean"}
    kinds |= dict.fromkeys((*STRIPE_ID_COLUMNS, *LOCATION_COLUMNS), "string")
    inputs = [
        ColSpec(kinds.get(name, "double"), name, required=name not in DEFAULTS)
        for name in VALIDATED_COLUMNS
    ]
    outputs = [ColSpec("string", "transaction_id"), ColSpec("double", "score")]
    outputs += [ColSpec("string", "band"), ColSpec("string", "model_version")]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def input_example() -> pd.DataFrame:
    """Two transactions of one user a minute apart: an everyday payment, then a transfer
    that empties the account (the second sees the first in its velocity features)."""
    return pd.DataFrame(
        {
            "transaction_id": ["example-1", "example-2"],
            "user_id": [42, 42],
            "timestamp": [1767225600, 1767225660],
            "type": ["PAYMENT", "TRANSFER"],
            "amount": [25.0, 950.5],
            "old_balance_orig": [975.5, 950.5],
            "new_balance_orig": [950.5, 0.0],
            "old_balance_dest": [0.0, 0.0],
            "new_balance_dest": [0.0, 0.0],
        }
    )
