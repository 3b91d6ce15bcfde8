"""The feature state's key layout: a user's keys carry the partition Kafka's default
partitioner gives its messages (murmur2 of the key, as org.apache.kafka.common.utils.Utils
computes it: the vectors are Kafka's own), so a partition's users share a Redis Cluster slot."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from serving.feature_state.redis_store import RedisFeatures, murmur2, partition_of

KAFKA_VECTORS = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


@pytest.mark.parametrize("text", sorted(KAFKA_VECTORS))
def test_murmur2_is_kafkas(text):
    assert murmur2(text.encode()) == KAFKA_VECTORS[text]


def test_a_partitions_users_share_one_slot_and_their_id_index_too():
    state = RedisFeatures(client=None, partitions=12)
    by_partition: dict[int, set[int]] = {}
    for user in range(2000):
        key = state.key_of(user)
        slot = key_slot(key.encode())
        assert key_slot(f"{key}:ids".encode()) == slot
        by_partition.setdefault(partition_of(user, 12), set()).add(slot)
    assert sorted(by_partition) == list(range(12))
    assert all(len(slots) == 1 for slots in by_partition.values())


def test_partitions_must_be_positive():
    with pytest.raises(ValueError, match="partitions"):
        RedisFeatures(client=None, partitions=0)
