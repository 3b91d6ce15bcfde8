"""The per-user feature state of scoring: one contract (`FeatureState`, contract.py), two
implementations (`MemoryFeatures` in this process, `RedisFeatures` shared by every
process, with its Lua script), the choice between them and the start-up check
(startup.py), and the `fraudops-features rebuild` command (rebuild.py). The batch
transform they agree with is `fraudops.features.batch_features`."""

from serving.feature_state.contract import (
    FeatureState,
    FeatureStateUnavailable,
    features_without_history,
)
from serving.feature_state.memory import MemoryFeatures
from serving.feature_state.redis_store import RedisFeatures
from serving.feature_state.startup import (
    BATCH_TIMEOUT_SECONDS,
    check_history,
    open_feature_state,
)

__all__ = [
    "BATCH_TIMEOUT_SECONDS",
    "FeatureState",
    "FeatureStateUnavailable",
    "MemoryFeatures",
    "RedisFeatures",
    "check_history",
    "features_without_history",
    "open_feature_state",
]
