"""The stream scorer (`fraudops-scorer`): raw_transactions -> scores on Kafka and Postgres.

One consumer of the group polls micro-batches. Each batch is decoded and validated
(failures go to the dead-letter topic with the reason in an `error` header, original bytes
and key kept), scored with this process's per-user feature state, and its ScoreResponses
produced to transaction_scores. A writer thread then stores the rows in Postgres
(idempotently; a row the database refuses for what it holds goes to the dead-letter topic
with the database's reason, and only it), waits until Kafka has acknowledged every message
of the batch, and only then are the batch's offsets committed. At-least-once delivery plus
the primary key on scored_transactions: no transaction is lost and none is written twice,
even if the process dies anywhere in between. The writer overlaps the database round trip
with scoring the next batches, and writes every batch waiting for it in one transaction, so
a slow commit neither holds scores back from Kafka nor lets a backlog of small writes grow;
batches are committed in order.

Kafka's acknowledgements are awaited for at most FRAUDOPS_SCORER_DELIVERY_TIMEOUT_S: past it
(the broker gone, too few in-sync replicas) nothing of the batch or of those behind it is
committed, and the scorer consumes again from the last durable offsets, scoring those
transactions again (the feature state and the table are idempotent by transaction id;
transaction_scores may then hold a score twice)."""

from __future__ import annotations

import argparse
import logging
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from google.protobuf.message import DecodeError

from fraudops.bands import BANDS
from fraudops.pii import configure_logging
from fraudops.proto_gen.fraud.v1 import fraud_pb2
from fraudops.schema import TimestampWindow
from fraudops.settings import Settings, load_settings
from serving import metrics
from serving.consumer_loop import Backoff
from serving.feature_state import (
    BATCH_TIMEOUT_SECONDS,
    FeatureStateUnavailable,
    check_history,
    open_feature_state,
)
from serving.geoip_store import GeoIpStore
from serving.kafka_io import (
    consume_messages,
    dead_letter,
    make_consumer,
    make_producer,
    next_offsets,
)
from serving.model_store import ModelStore
from serving.persistence import RETRYABLE, DeploymentRecorder, ScoreWriter, WriteResult
from serving.rule_store import RuleStore
from serving.scoring import NoModel, ScoredBatch, ScoringCore, decode_many

log = logging.getLogger(__name__)

_BAND_COUNTERS = [metrics.SCORES.labels(band=b, source="stream") for b in BANDS]
# Waits between attempts while the feature store or Postgres is unreachable: doubling, capped.
RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS = 0.2, 5.0
# Scored batches waiting for the writer: while it is slower than scoring (a slow commit, a
# database away) up to this many are scored and on Kafka before consuming pauses.
HANDOFF_BATCHES = 8
# librdkafka reports a message it could not deliver within message.timeout.ms (the delivery
# timeout) as failed; its scan for such messages runs about once a second.
DELIVERY_REPORT_GRACE_S = 2.0
# Delivery failures that mean "not acknowledged in time" (consume again); any other error
# (authorization, a message too large) stops the scorer.
UNACKNOWLEDGED = frozenset({
    KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN, KafkaError.REQUEST_TIMED_OUT, KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND, KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
})  # fmt: skip


class ScorerFailed(RuntimeError):
    """A batch could not be made durable; its offsets stay uncommitted."""


class DeliveryTimeout(ScorerFailed):
    """Kafka did not acknowledge a batch's messages within the delivery timeout: the batch
    is consumed again rather than given up."""


@dataclass
class _Batch:
    """One micro-batch on its way to being durable."""

    offsets: list[TopicPartition]
    produced: int
    scored: ScoredBatch | None = None
    sources: list[Message] = field(default_factory=list)  # the message of each scored row
    acks: list[Any] = field(default_factory=list)  # list.append is atomic: no lock needed

    def on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        self.acks.append(err)


class StreamScorer:
    def __init__(
        self,
        settings: Settings,
        core: ScoringCore,
        consumer: Consumer,
        producer: Producer,
        writer: ScoreWriter | None,
    ):
        self.settings = settings
        self.core = core
        self._window = TimestampWindow.from_settings(settings)
        self._consumer = consumer
        self._producer = producer
        self._writer = writer
        self._handoff: queue.Queue[_Batch | None] = queue.Queue(maxsize=HANDOFF_BATCHES)
        self._durable: queue.SimpleQueue[_Batch] = queue.SimpleQueue()
        self._failure: Exception | None = None
        # Per partition, the first offset not yet durable: where consuming starts again
        # after a delivery timeout. Main thread only (consume, commit, revoke, rewind).
        self._resume: dict[tuple[str, int], int] = {}
        self._stop = threading.Event()
        self._inflight = 0
        self._idle = threading.Condition()
        self._thread = threading.Thread(target=self._write_loop, name="scorer-writer", daemon=True)

    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set or a batch fails for good (a delivery timeout is
        retried); then make everything durable."""
        s = self.settings
        self._stop = stop
        self._consumer.subscribe([s.topic_raw], on_revoke=self._on_revoke)
        self._thread.start()
        try:
            while not stop.is_set() and (self._failure is None or self._rewind()):
                msgs = consume_messages(self._consumer, s.scorer_batch_size, s.scorer_poll_seconds)
                self._commit_durable()
                if msgs:
                    self._process(msgs)
        finally:
            self._handoff.put(None)
            self._thread.join()
            self._commit_durable(asynchronous=False)
        if self._failure is not None:
            raise ScorerFailed(str(self._failure)) from self._failure

    def close(self) -> None:
        """Leave the group (partitions go to the other scorers) and release the clients."""
        self._producer.flush(30)
        self._consumer.close()
        if self._writer is not None:
            self._writer.close()

    def _process(self, msgs: list[Message]) -> None:
        """Decode, score and produce one micro-batch, then hand it to the writer."""
        started = time.perf_counter()
        batch = _Batch(next_offsets(msgs), produced=0)
        for msg in msgs:
            self._resume.setdefault((msg.topic(), msg.partition()), msg.offset())
        txs, batch.sources = self._decode_or_dlq(msgs, batch)
        if txs:
            batch.scored = self._score(txs, started)
            self._produce_scores(batch)
        with self._idle:
            self._inflight += 1
        self._handoff.put(batch)
        metrics.BATCH_LATENCY.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(msgs))

    def _score(self, txs: list[dict], started: float) -> ScoredBatch:
        """Score with the current model; without one yet, wait for it (nothing is lost).
        Without the feature store, hold the batch (no further consuming, nothing committed)
        and retry with backoff: a transaction the store recorded before it failed counts
        once and keeps its first features (by id)."""
        pause = Backoff(self._stop, RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS)
        while True:
            try:
                return self.core.score(txs, int(started * 1e9))
            except NoModel:
                log.warning("no model loaded yet; holding %d transactions", len(txs))
                time.sleep(1.0)
            except FeatureStateUnavailable as err:
                metrics.FEATURE_STORE_RETRIES.inc()
                log.warning("feature store unavailable (%s); holding %d transactions, "
                            "retrying in %.1f s", err, len(txs), pause.delay)  # fmt: skip
                if pause.wait():
                    raise ScorerFailed("stopped while the feature store was unavailable") from err

    def _decode_or_dlq(self, msgs: list[Message], batch: _Batch) -> tuple[list[dict], list]:
        """The valid transactions of a batch and their messages; the rest go to the DLQ
        with the reason, in offset order (the batch is validated column-wise at once)."""
        requests, decoded, failures = [], [], []
        for msg in msgs:
            try:
                requests.append(fraud_pb2.TransactionRequest.FromString(msg.value()))
                decoded.append(msg)
            except DecodeError as err:
                failures.append((msg, f"undecodable TransactionRequest: {err}", "decode"))
        txs, errors = decode_many(requests, self._window)
        bad = {i for i, _ in errors}
        failures += [(decoded[i], str(err), err.field) for i, err in errors]
        if failures:
            order = {id(m): n for n, m in enumerate(msgs)}
            for msg, reason, field_name in sorted(failures, key=lambda f: order[id(f[0])]):
                self._dead_letter(msg, reason, field_name, batch)
        keep = [i for i in range(len(txs)) if i not in bad] if bad else range(len(txs))
        return [txs[i] for i in keep], [decoded[i] for i in keep]

    def _dead_letter(self, msg: Message, reason: str, field_name: str, batch: _Batch) -> None:
        value, headers = dead_letter(msg, reason, field_name)
        self._produce(self.settings.topic_dlq, msg.key(), value, batch, headers=headers)

    def _produce_scores(self, batch: _Batch) -> None:
        scored = batch.scored
        topic = self.settings.topic_scores
        for msg, response in zip(batch.sources, scored.responses(), strict=True):
            self._produce(topic, msg.key(), response.SerializeToString(), batch)
        for band, count in enumerate(np.bincount(scored.bands, minlength=len(BANDS)).tolist()):
            if count:
                _BAND_COUNTERS[band].inc(count)

    def _produce(self, topic: str, key, value, batch: _Batch, headers=None) -> None:
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=batch.on_delivery
                )
                break
            except BufferError:  # the local queue is full: let deliveries drain
                self._producer.poll(0.05)
        batch.produced += 1

    def _write_loop(self) -> None:
        """Writer thread: Postgres rows, then Kafka acknowledgements, then mark durable."""
        stopping = False
        while not stopping:
            batches, stopping = self._waiting_batches()
            try:
                if batches and self._failure is None:
                    started = time.perf_counter()
                    self._make_durable(batches)
                    for batch in batches:
                        self._durable.put(batch)
                    metrics.DURABLE_LATENCY.observe(time.perf_counter() - started)
            except DeliveryTimeout as err:  # consumed again (the main thread's _rewind)
                self._failure = err
            except Exception as err:  # keep the offsets uncommitted and stop consuming
                log.exception("batch could not be made durable; stopping")
                self._failure = err
            with self._idle:
                self._inflight -= len(batches)
                self._idle.notify_all()

    def _waiting_batches(self) -> tuple[list[_Batch], bool]:
        """The next batch (waiting for one) and every batch queued behind it, in order;
        and whether the stop marker came."""
        batches: list[_Batch] = []
        item = self._handoff.get()
        while item is not None:
            batches.append(item)
            try:
                item = self._handoff.get_nowait()
            except queue.Empty:
                return batches, False
        return batches, True

    def _make_durable(self, batches: list[_Batch]) -> None:
        """Rows into Postgres in one write (a row it refuses goes to the DLQ, the rest are
        written), then every Kafka acknowledgement of the batches, DLQ messages included."""
        scored = [b for b in batches if b.scored is not None]
        if scored and self._writer is not None:
            result = self._write_rows([b.scored for b in scored])
            for refused in result.refused:
                batch = scored[refused.batch]
                self._dead_letter(batch.sources[refused.row], refused.reason, "database", batch)
        self._await_acks(batches)

    def _await_acks(self, batches: list[_Batch]) -> None:
        """Every Kafka acknowledgement of the batches, within the delivery timeout (the
        producer's message.timeout.ms is the same, so librdkafka gives up on them too)."""
        bound = self.settings.scorer_delivery_timeout_s
        deadline = time.monotonic() + bound + DELIVERY_REPORT_GRACE_S
        for batch in batches:
            while len(batch.acks) < batch.produced and time.monotonic() < deadline:
                self._producer.poll(0.05)
        acks = [e for b in batches for e in list(b.acks)]
        missing = sum(b.produced for b in batches) - len(acks)
        errors = [e for e in acks if e is not None]
        if any(e.code() not in UNACKNOWLEDGED for e in errors):
            raise ScorerFailed(f"{len(errors)} messages not delivered, first: {errors[0]}")
        if missing > 0 or errors:
            raise DeliveryTimeout(
                f"Kafka did not acknowledge {missing + len(errors)} of "
                f"{sum(b.produced for b in batches)} messages within {bound:g} s"
                + (f" (first: {errors[0]})" if errors else "")
            )

    def _write_rows(self, scored: list[ScoredBatch]) -> WriteResult:
        """Without Postgres (a restart, a failover), hold the batches (nothing committed,
        and consuming stops once the hand-off queue is full) and retry with backoff until
        the database is back or the scorer is stopped: an outage never ends the process."""
        pause = Backoff(self._stop, RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS)
        while True:
            try:
                return self._writer.write([(batch, "stream") for batch in scored])
            except RETRYABLE as err:
                log.warning("database unavailable (%s); holding %d rows, retrying in %.1f s",
                            str(err).strip(), sum(map(len, scored)), pause.delay)  # fmt: skip
                if pause.wait():
                    raise ScorerFailed("stopped while the database was unavailable") from err

    def _commit_durable(self, asynchronous: bool = True) -> None:
        """Commit the offsets of every batch the writer finished, in order."""
        offsets: dict[tuple[str, int], TopicPartition] = {}
        while True:
            try:
                batch = self._durable.get_nowait()
            except queue.Empty:
                break
            for tp in batch.offsets:
                offsets[(tp.topic, tp.partition)] = tp
        if not offsets:
            return
        self._resume.update((key, tp.offset) for key, tp in offsets.items())
        try:
            self._consumer.commit(offsets=list(offsets.values()), asynchronous=asynchronous)
        except KafkaException as err:  # the batches stay durable; a restart re-reads them
            log.warning("could not commit offsets (%s); they are committed later or re-read", err)

    def _rewind(self) -> bool:
        """After a delivery timeout, once the writer has let go of every batch: consume
        again from each partition's first offset not yet durable, so no batch whose scores
        Kafka did not acknowledge is committed or skipped. False for any other failure."""
        failure = self._failure
        if not isinstance(failure, DeliveryTimeout):
            return False
        with self._idle:
            self._idle.wait_for(lambda: self._inflight == 0)
        self._commit_durable()
        metrics.DELIVERY_TIMEOUTS.inc()
        log.warning("%s; consuming again from the last durable offsets", failure)
        for (topic, partition), offset in self._resume.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as err:  # no longer ours: its next owner starts from the commit
                log.info("not seeking %s[%d]: %s", topic, partition, err)
        self._failure = None
        return True

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Before partitions move to another scorer, finish and commit what we hold."""
        with self._idle:
            self._idle.wait_for(lambda: self._inflight == 0 or self._failure is not None, 60)
        self._commit_durable(asynchronous=False)
        for tp in partitions:
            self._resume.pop((tp.topic, tp.partition), None)


def build_scorer(settings: Settings, group: str | None = None) -> tuple[StreamScorer, ModelStore]:
    """Wire a scorer from settings: model store (watching), Kafka clients, Postgres writer."""
    url = settings.database_url
    recorder = DeploymentRecorder(url, "scorer") if url else None
    store = ModelStore(settings.model_dir, recorder, prewarm=1)
    store.load_latest()
    store.start_watching()
    writer = ScoreWriter(url, sample_rate=settings.feature_sample_rate) if url else None
    consumer = make_consumer(settings, group)
    rules = RuleStore.from_settings(settings)
    if rules is not None:
        rules.start()
    geoip = GeoIpStore(settings.geoip_db, settings.ip_hash_key)
    geoip.start_watching()
    state = open_feature_state(settings, BATCH_TIMEOUT_SECONDS)
    core = ScoringCore(store, state, rules=rules, geoip=geoip)
    check_history(core.features, url)
    delivery_ms = int(settings.scorer_delivery_timeout_s * 1000)
    producer = make_producer(settings, **{"message.timeout.ms": delivery_ms})
    scorer = StreamScorer(settings, core, consumer, producer, writer)
    return scorer, store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fraudops Kafka stream scorer")
    parser.add_argument("--group", help="consumer group (default FRAUDOPS_CONSUMER_GROUP)")
    parser.add_argument(
        "--metrics-port", type=int, help="default FRAUDOPS_METRICS_PORT + 1; 0 turns it off"
    )
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level)
    default_port = settings.metrics_port + 1 if settings.metrics_port > 0 else 0
    metrics.serve(default_port if args.metrics_port is None else args.metrics_port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    scorer, store = build_scorer(settings, args.group)
    log.info("scoring %s -> %s as group %s", settings.topic_raw, settings.topic_scores,
             args.group or settings.consumer_group)  # fmt: skip
    try:
        scorer.run(stop)
    except ScorerFailed as err:
        log.error("scorer stopped: %s", err)
        return 1
    finally:
        scorer.close()
        store.stop()
    log.info("scorer stopped cleanly")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
