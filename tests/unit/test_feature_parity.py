"""DESIGN section 5: the online transform, run over a dataset one transaction at a time
(as the scorer sees it), reproduces the batch features featurize trains on."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from fraudops.features import FEATURE_NAMES, MAX_GAP_SECONDS, OnlineFeatures, batch_features
from tests.helpers.transactions import make_transactions
from training.lib.simulator import SimConfig, simulate

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def edge_cases() -> pd.DataFrame:
    """Rows that stress the windows: same-second ties, a row exactly one window after
    another, gaps longer than MAX_GAP_SECONDS, one user with many rows in an hour."""
    base = make_transactions(12, seed=9).iloc[[0] * 12].reset_index(drop=True)
    t0 = 1_700_000_000
    offsets = [0, 0, 0, 3600, 3601, 86400, 86400, 86401, 86401 + MAX_GAP_SECONDS + 5]
    offsets += [86401 + MAX_GAP_SECONDS + 6 + i for i in range(3)]
    base["timestamp"] = np.array(offsets, dtype=np.int64) + t0
    base["user_id"] = np.int64(42)
    base["amount"] = np.arange(1, 13) * 100.0
    base["transaction_id"] = [f"edge-{i}" for i in range(12)]
    return base


def simulated() -> pd.DataFrame:
    """A small run of the project's PaySim-style simulator (bursty fraud episodes)."""
    cfg = SimConfig(
        n_users=300, n_steps=72, start=1_704_067_200, tx_per_user_day=3.0,
        ato_rate=0.01, card_testing_rate=0.01, seed=3,
    )  # fmt: skip
    return simulate(cfg).sort_values("timestamp", kind="stable").reset_index(drop=True)


DATASETS = {
    "toy": lambda: make_transactions(3000, fraud_rate=0.05, seed=5, days=3),
    "simulator": simulated,
    "edge_cases": edge_cases,
}


@pytest.fixture(params=sorted(DATASETS))
def dataset(request) -> pd.DataFrame:
    return DATASETS[request.param]()


def _rows(frame: pd.DataFrame) -> list[dict]:
    return frame.to_dict("records")


def test_online_row_by_row_reproduces_batch_features(dataset):
    expected = batch_features(dataset)
    online = OnlineFeatures()
    got = np.vstack([online.transform(tx) for tx in _rows(dataset)])
    assert got.dtype == np.float32 and got.shape == (len(dataset), len(FEATURE_NAMES))
    for i, name in enumerate(FEATURE_NAMES):
        np.testing.assert_allclose(got[:, i], expected[:, i], **TOLERANCE, err_msg=name)


def test_online_micro_batches_reproduce_batch_features(dataset):
    """The scorer featurizes a polled micro-batch at once (transform_many)."""
    expected = batch_features(dataset)
    online, rows = OnlineFeatures(), _rows(dataset)
    cuts = np.cumsum(np.random.default_rng(0).integers(1, 200, size=len(rows)))
    bounds = [0, *cuts[cuts < len(rows)].tolist(), len(rows)]
    got = np.vstack([online.transform_many(rows[a:b]) for a, b in itertools.pairwise(bounds)])
    np.testing.assert_allclose(got, expected, **TOLERANCE)


def test_simulated_data_exercises_the_velocity_windows():
    """Guard against a vacuous parity test: the data must have repeat users in a window."""
    features = batch_features(simulated())
    assert features[:, FEATURE_NAMES.index("tx_count_1h")].max() >= 2
    assert (features[:, FEATURE_NAMES.index("tx_count_24h")] > 0).mean() > 0.1
