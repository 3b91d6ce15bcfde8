"""The fraud network, built apart from fitting so tests can make a tiny one.

Raw float32 features (N, len(FEATURE_NAMES)) go in, probabilities (N, 1) come out. The first
layer is a Normalization adapted on the training features, so preprocessing travels inside
the exported model and the scorer feeds it exactly what fraudops.features computes.

Class imbalance is handled with a class weight on frauds, not focal loss: the weight is one
explicit number, it multiplies cleanly with the per-row sample weights (feedback rows count
more), and its effect on the output is known exactly, so `correct_prior` can undo it after
training and the served score stays an estimate of the fraud probability. Focal loss
reshapes the loss per example and leaves no such clean correction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np

from fraudops.features import N_FEATURES

OUTPUT_LAYER = "score"


def build_model(
    train_features: np.ndarray,
    hidden_units: Sequence[int] = (64, 32),
    dropout: float = 0.1,
    learning_rate: float = 1e-3,
    initial_rate: float = 0.01,
) -> keras.Model:
    """A compiled MLP: Normalization -> Dense(relu) blocks -> Dense(1, sigmoid).

    `initial_rate` (the weighted fraud share) sets the output bias, so the first epoch
    does not spend itself learning the base rate (the usual imbalanced-data trick)."""
    norm = keras.layers.Normalization(name="normalize")
    norm.adapt(np.asarray(train_features, dtype=np.float32))
    inputs = keras.Input(shape=(N_FEATURES,), dtype="float32", name="features")
    x = norm(inputs)
    for i, units in enumerate(hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"dense_{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
    bias = math.log(initial_rate / (1.0 - initial_rate))
    outputs = keras.layers.Dense(
        1,
        activation="sigmoid",
        bias_initializer=keras.initializers.Constant(bias),
        name=OUTPUT_LAYER,
    )(x)
    model = keras.Model(inputs, outputs, name="fraud_mlp")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[
            keras.metrics.AUC(curve="PR", name="pr_auc"),
            keras.metrics.AUC(curve="ROC", name="roc_auc"),
        ],
        # Several batches per graph call: the same updates, a fifth less wall time on 1M
        # rows (per-step dispatch dominates a network this small).
        steps_per_execution=16,
    )
    return model


def correct_prior(model: keras.Model, positive_weight: float) -> None:
    """Undo the fraud class weight in the output: weighting frauds by w multiplies the
    learnt odds by w, so subtracting log(w) from the output bias restores probabilities.
    Ranking (PR-AUC, thresholds by FPR) is unchanged; only the scale is fixed."""
    layer = model.get_layer(OUTPUT_LAYER)
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, bias - np.float32(math.log(positive_weight))])


def predict(model: keras.Model, features: np.ndarray, batch_size: int = 65536) -> np.ndarray:
    """Fraud probabilities as a flat float32 array (large batches: scoring is cheap)."""
    x = np.asarray(features, dtype=np.float32)
    if len(x) == 0:
        return np.zeros(0, dtype=np.float32)
    return model.predict(x, batch_size=batch_size, verbose=0).reshape(-1)
