"""export's checks on hand-made arrays: TFLite/Keras parity and the golden rows."""

from __future__ import annotations

import numpy as np
import pytest

from training.export import golden_rows, parity


def test_parity_passes_within_tolerance_and_fails_beyond_it():
    keras = np.array([0.1, 0.5, 0.9], dtype=np.float32)
    assert parity(keras, keras + 1e-6, 1e-5)["passed"]
    failed = parity(keras, keras + np.array([0, 0, 1e-3], dtype=np.float32), 1e-5)
    assert not failed["passed"]
    assert failed["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)


def test_parity_of_nothing_is_a_failure():
    assert not parity(np.zeros(0), np.zeros(0), 1.0)["passed"]


def test_golden_rows_take_up_to_half_fraud_and_are_repeatable():
    labels = np.zeros(1000, dtype=np.int8)
    labels[::50] = 1  # 20 frauds
    rows = golden_rows(labels, 32, seed=3)
    assert len(rows) == len(set(rows.tolist())) == 32
    assert labels[rows].sum() == 16
    assert np.array_equal(rows, golden_rows(labels, 32, seed=3))
