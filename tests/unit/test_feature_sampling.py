"""Which scored transactions keep their feature vector for the skew check."""

from __future__ import annotations

from serving.persistence import sampled


def test_sampling_is_by_id_and_near_the_rate():
    ids = [f"tx-{i}" for i in range(20_000)]
    share = sum(sampled(tx, 0.01) for tx in ids) / len(ids)
    assert 0.007 < share < 0.013
    assert [sampled(tx, 0.01) for tx in ids] == [sampled(tx, 0.01) for tx in ids]
    assert not any(sampled(tx, 0.0) for tx in ids) and all(sampled(tx, 1.0) for tx in ids)
