"""The Redis script's replies become the velocity features: counts, log sums, and the
log gap, capped, with "never seen" reading as the cap."""

from __future__ import annotations

import numpy as np

from fraudops.features import MAX_GAP_SECONDS
from serving.feature_state.redis_store import velocity_of

REPLIES = [
    b"0 0 0 0 -1",  # never seen
    b"1 950.5 3 1200.25 61",
    b"0 0 2 0.01 86399",
    b"4 1e+20 9 1.0000000000000002e+20 0",  # %.17g sums, a repeat in the same second
    b"0 0 0 0 900000",  # a gap longer than MAX_GAP_SECONDS
    b"2 -0 2 -0 5",
    b"1 -1e-09 1 -1e-09 5",  # a sum below zero reads as zero
]


def test_replies_become_counts_log_sums_and_log_gaps():
    features = velocity_of(REPLIES)
    assert features.shape == (len(REPLIES), 5) and features.dtype == np.float64
    assert features[1].tolist() == [1.0, np.log1p(950.5), 3.0, np.log1p(1200.25), np.log1p(61)]
    assert features[3].tolist() == [4.0, np.log1p(1e20), 9.0, np.log1p(1.0000000000000002e20), 0.0]
    assert features[5].tolist() == [2.0, 0.0, 2.0, 0.0, np.log1p(5)]  # -0 reads as 0
    assert features[6].tolist() == [1.0, 0.0, 1.0, 0.0, np.log1p(5)]


def test_the_gap_reads_never_seen_and_capped():
    features = velocity_of([b"0 0 0 0 -1", b"0 0 0 0 900000", b"1 5 1 5 60"])
    assert features[:, -1].tolist() == [np.log1p(MAX_GAP_SECONDS)] * 2 + [np.log1p(60)]
    assert features[2].tolist() == [1.0, np.log1p(5.0), 1.0, np.log1p(5.0), np.log1p(60)]
