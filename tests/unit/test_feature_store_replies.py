"""The Redis script's replies become the same velocity features whether a batch is parsed
in plain Python (a few rows, the inline path) or with numpy (a stream micro-batch)."""

from __future__ import annotations

import numpy as np
import pytest

from fraudops.feature_store import SMALL_BATCH, _velocity_numpy, velocity_of
from fraudops.features import MAX_GAP_SECONDS

REPLIES = [
    b"0 0 0 0 -1",  # never seen
    b"1 950.5 3 1200.25 61",
    b"0 0 2 0.01 86399",
    b"4 1e+20 9 1.0000000000000002e+20 0",  # %.17g sums, a repeat in the same second
    b"0 0 0 0 900000",  # a gap longer than MAX_GAP_SECONDS
    b"2 -0 2 -0 5",
    b"1 -1e-09 1 -1e-09 5",  # a sum below zero reads as zero
]


@pytest.mark.parametrize("n", [1, 2, len(REPLIES), SMALL_BATCH])
def test_plain_python_replies_equal_numpy(n):
    raw = (REPLIES * SMALL_BATCH)[:n]
    small = velocity_of(raw)
    assert small.shape == (n, 5) and small.dtype == np.float64
    np.testing.assert_array_equal(small, _velocity_numpy(raw))


def test_the_gap_reads_never_seen_and_capped():
    features = velocity_of([b"0 0 0 0 -1", b"0 0 0 0 900000", b"1 5 1 5 60"])
    assert features[:, -1].tolist() == [np.log1p(MAX_GAP_SECONDS)] * 2 + [np.log1p(60)]
    assert features[2].tolist() == [1.0, np.log1p(5.0), 1.0, np.log1p(5.0), np.log1p(60)]
