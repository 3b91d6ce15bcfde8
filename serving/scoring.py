"""The scoring core shared by the inline gRPC path and the Kafka scorer: validated
transactions -> online features (per-user state) -> TFLite -> risk bands -> reasons.

Everything is done a batch at a time (one transaction is a batch of one), so the model,
the bands and the explainer run vectorised. The model reference is read once per batch:
a hot reload mid-batch cannot mix two models in one answer. The analysts' rules
(fraudops.rules) come after the model, their set read once per batch the same way: the first
live rule that matches decides the band, and the answer names it."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fraudops.bands import BANDS, bands_for, location_reasons
from fraudops.geoip import UNKNOWN
from fraudops.proto_gen.fraud.v1 import fraud_pb2
from fraudops.rules import EMPTY, MODEL, Decisions, RuleSet
from fraudops.schema import (
    DEFAULT_WINDOW,
    VALIDATED_COLUMNS,
    InvalidTransaction,
    TimestampWindow,
    proto_to_dict,
    validate_columns,
    validate_transaction,
)
from serving import metrics
from serving.feature_state import (
    FeatureState,
    FeatureStateUnavailable,
    MemoryFeatures,
    features_without_history,
)
from serving.geoip_store import GeoIpStore
from serving.model_store import LoadedModel, ModelStore

# fraudops.bands index (0 ALLOW, 1 CHALLENGE, 2 BLOCK) -> proto enum value.
BAND_PROTO = tuple(fraud_pb2.Band.Value(name) for name in BANDS)
_NOWHERE = (UNKNOWN, "")  # an empty address: unknown, nothing to hash
NO_HISTORY_REASON = "scored without this user's history: the feature store is unreachable"


class NoModel(RuntimeError):
    """No valid model has been loaded yet; the caller should retry later."""


@dataclass
class ScoredBatch:
    """The result of scoring a batch; arrays are aligned with `txs`."""

    txs: list[Mapping[str, Any]]
    scores: np.ndarray
    bands: np.ndarray
    reasons: list[list[str]]
    model: LoadedModel
    latency_us: int
    scored_at_ms: int
    features: np.ndarray | None = None  # what the model scored (None: scored without history)
    decided_by: list[str] | None = None  # per row, the rule that decided (None: the model, all)
    shadow: list[list[str] | None] | None = None  # per row, the shadow rules that matched
    rules_version: str = EMPTY.version

    def deciders(self) -> list[str]:
        return self.decided_by if self.decided_by is not None else [MODEL] * len(self.txs)

    def __len__(self) -> int:
        return len(self.txs)

    def band_names(self) -> list[str]:
        return [BANDS[i] for i in self.bands.tolist()]

    def responses(self) -> list[fraud_pb2.ScoreResponse]:
        """One ScoreResponse per transaction, in order."""
        version, rules_version = self.model.version, self.rules_version
        return [
            fraud_pb2.ScoreResponse(
                transaction_id=tx["transaction_id"],
                score=score,
                band=BAND_PROTO[band],
                model_version=version,
                reasons=reasons,
                latency_us=self.latency_us,
                scored_at=self.scored_at_ms,
                decided_by=decided_by,
                rules_version=rules_version,
            )
            for tx, score, band, reasons, decided_by in zip(
                self.txs,
                self.scores.tolist(),
                self.bands.tolist(),
                self.reasons,
                self.deciders(),
                strict=True,
            )  # fmt: skip
        ]


def decode(
    msg: fraud_pb2.TransactionRequest, where: str = "", window: TimestampWindow = DEFAULT_WINDOW
) -> dict[str, Any]:
    """A validated transaction dict; InvalidTransaction names the field (`where` prefixes
    it, e.g. `transactions[3].` inside a batch)."""
    tx = proto_to_dict(msg)
    try:
        validate_transaction(tx, window)
    except InvalidTransaction as err:
        if not where:
            raise
        raise InvalidTransaction(f"{where}{err.field}", err.problem) from err
    return tx


def decode_batch(
    msgs: Iterable[fraud_pb2.TransactionRequest], window: TimestampWindow = DEFAULT_WINDOW
) -> list[dict[str, Any]]:
    """Validate every transaction of a batch request; the first bad one names its index."""
    return [decode(msg, f"transactions[{i}].", window) for i, msg in enumerate(msgs)]


def decode_many(
    msgs: Sequence[fraud_pb2.TransactionRequest], window: TimestampWindow = DEFAULT_WINDOW
) -> tuple[list[dict[str, Any]], list[tuple[int, InvalidTransaction]]]:
    """Every message as a dict, and the index and error of each invalid one: a stream
    micro-batch is validated column-wise at once, and a bad row only drops itself."""
    txs = [proto_to_dict(msg) for msg in msgs]
    if not txs:
        return txs, []
    columns = {k: [tx[k] for tx in txs] for k in VALIDATED_COLUMNS}
    return txs, validate_columns(columns, window)


class RuleSource:
    """Where a core reads the served rule set (serving.rule_store.RuleStore swaps it)."""

    def __init__(self, rules: RuleSet = EMPTY):
        self.current = rules


def apply_rules(rules: RuleSet, decisions: Decisions, reasons: list[list[str]]) -> list[list[str]]:
    """The reasons of a batch with the deciding rule first where a rule decided."""
    if not decisions.matched:
        return reasons
    return [
        r if name == MODEL else [rules.reasons[name], *r]
        for name, r in zip(decisions.decided_by, reasons, strict=True)
    ]


class ScoringCore:
    """Scores batches against the store's current model with one per-user feature state.

    An in-memory state is shared by every caller of this core (the inline server's worker
    threads), so updating it is serialised; a Redis state is atomic by itself. The model
    needs no lock. With `without_history_ok` (the inline path), an unreachable feature
    store does not fail the call: the batch is scored as if its users were new and every
    answer says so in its reasons; otherwise FeatureStateUnavailable reaches the caller.
    With a `geoip` store, each transaction's IP address is enriched (its `ip_country` and
    `ip_kind`) before the features are computed; without one, every address is unknown."""

    def __init__(
        self,
        store: ModelStore,
        features: FeatureState | None = None,
        without_history_ok: bool = False,
        rules: RuleSource | None = None,
        geoip: GeoIpStore | None = None,
    ):
        self.store = store
        self.geoip = geoip
        self.rules = rules if rules is not None else RuleSource()
        self.features = features if features is not None else MemoryFeatures()
        self._state_lock = contextlib.nullcontext() if self.features.shared else threading.Lock()
        self._without_history_ok = without_history_ok

    def score(self, txs: Sequence[Mapping[str, Any]], started_ns: int | None = None) -> ScoredBatch:
        """Score validated transactions; `started_ns` (perf_counter_ns) sets where the
        reported latency starts, so decoding and validation can be counted in it."""
        started_ns = time.perf_counter_ns() if started_ns is None else started_ns
        model = self.store.current
        if model is None:
            raise NoModel("no model loaded yet")
        rules = self.rules.current
        txs = list(txs)
        self._enrich(txs)
        features, with_history = self._features(txs)
        scores = model.predict(features)
        bands = bands_for(scores, model.thresholds)
        reasons = location_reasons(model.explainer.reasons(features), txs) if txs else []
        if not with_history:
            reasons = [[NO_HISTORY_REASON, *r] for r in reasons]
        decisions = rules.decide(txs, features, scores, bands)
        if decisions is not None:
            bands, reasons = decisions.bands, apply_rules(rules, decisions, reasons)
            metrics.count_rules(decisions)
        latency_us = (time.perf_counter_ns() - started_ns) // 1000
        return ScoredBatch(txs, scores, bands, reasons, model, latency_us, int(time.time() * 1000),
                           features if with_history else None,
                           decided_by=decisions.decided_by if decisions else None,
                           shadow=decisions.shadow if decisions else None,
                           rules_version=rules.version)  # fmt: skip

    def _enrich(self, txs: list[Mapping[str, Any]]) -> None:
        """Set each transaction's `ip_country`, `ip_kind` and, with a key, `ip_hash` (the
        database is read once per batch: a swap never splits one)."""
        if self.geoip is None:
            return
        located = self.geoip.located
        for tx in txs:
            ip = tx.get("ip_address", "") if located is not None else ""
            info, hashed = located(ip) if ip else _NOWHERE
            tx["ip_country"], tx["ip_kind"] = info.country, info.kind  # type: ignore[index]
            if hashed:
                tx["ip_hash"] = hashed  # type: ignore[index]

    def _features(self, txs: list[Mapping[str, Any]]) -> tuple[np.ndarray, bool]:
        """The batch's features, and whether they include the users' history."""
        try:
            with self._state_lock:
                return self.features.transform_many(txs), True
        except FeatureStateUnavailable:
            if not self._without_history_ok:
                raise
            metrics.SCORED_WITHOUT_HISTORY.inc(len(txs))
            return features_without_history(txs), False
