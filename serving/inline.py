"""Inline scoring, set up once for every front door that answers with a score on the
request path: the gRPC `FraudScoring` service and the Stripe decide endpoint.

The parts: the model store (hot reload, swaps recorded in model_deployments), the
analysts' rules and lists (hot-swapped from Postgres), the per-user feature state (checked
at start against what Postgres scored recently: an empty state would score returning users
as new), a scoring core that scores without history when the feature store is away rather
than failing the call, and the sink that stores every score off the request path, with the
feature vectors of a sample of them for the drift watch's online-vs-batch skew check. Scores
are counted by band as they are made."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fraudops.bands import BANDS
from fraudops.schema import TimestampWindow
from fraudops.settings import Settings
from serving import metrics
from serving.feature_state import check_history, open_feature_state
from serving.geoip_store import GeoIpStore
from serving.kafka_io import make_producer
from serving.model_store import ModelStore
from serving.persistence import DeploymentRecorder, InlineDeadLetters, InlineScoreSink, ScoreWriter
from serving.rule_store import RuleStore
from serving.scoring import ScoredBatch, ScoringCore

_BAND_COUNTERS = [metrics.SCORES.labels(band=b, source="inline") for b in BANDS]


class InlineScoring:
    """The parts of inline scoring of one process, started and stopped in order.
    `role` names the process in model_deployments (server, stripe)."""

    def __init__(self, settings: Settings, role: str, prewarm: int = 2):
        self.settings = settings
        self.window = TimestampWindow.from_settings(settings)
        url = settings.database_url
        self._recorder = DeploymentRecorder(url, role) if url else None
        self.store = ModelStore(settings.model_dir, self._recorder, prewarm=prewarm)
        self.rules = RuleStore.from_settings(settings)
        self.geoip = GeoIpStore(settings.geoip_db, settings.ip_hash_key)
        self.core = ScoringCore(
            self.store, open_feature_state(settings), without_history_ok=True, rules=self.rules,
            geoip=self.geoip,
        )  # fmt: skip
        self.sink: InlineScoreSink | None = None

    def start(self) -> None:
        """Load the newest model and watch for more, check the feature state's history,
        and open the sink (with a database to write to)."""
        s = self.settings
        self.store.load_latest()
        self.store.start_watching()
        self.geoip.start_watching()
        if self.rules is not None:
            self.rules.start()
        check_history(self.core.features, s.database_url)
        if s.database_url:
            writer = ScoreWriter(s.database_url, sample_rate=s.feature_sample_rate)
            dead_letters = InlineDeadLetters(make_producer(s), s.topic_inline_dlq)
            self.sink = InlineScoreSink(writer, dead_letters)

    def score(self, txs: Sequence[Mapping[str, Any]], started_ns: int) -> ScoredBatch:
        """Score validated transactions, count them by band and hand them to the sink."""
        batch = self.core.score(txs, started_ns)
        for band, count in enumerate(np.bincount(batch.bands, minlength=len(BANDS)).tolist()):
            if count:
                _BAND_COUNTERS[band].inc(count)
        if self.sink is not None:
            self.sink.submit(batch)
        return batch

    def stop(self) -> None:
        """Stop watching, drain the sink, and record that this process stopped serving."""
        self.store.stop()
        self.geoip.stop()
        if self.rules is not None:
            self.rules.stop()
        if self.sink is not None:
            self.sink.close()
        if self._recorder is not None:
            self._recorder.stopped()
