"""Dynamic batching of concurrent inline Score calls, as model servers do: calls that wait at
the same time are scored together, so they share one Redis script call, one TFLite invoke,
one rules pass and one hand-off to the sink, and a call costs the server a share of that
fixed work instead of all of it.

No thread of its own: the gRPC handler thread of a call that finds nobody scoring scores
itself, at once (a lone caller waits for nobody), or after `window_s` if one is set, with
whatever has gathered by then. Calls that arrive meanwhile wait, and form the next batch (up
to `max_size`), which the leader scores too while its own answer is not done; once it is,
leadership passes to a waiting call's thread. Under load, batches therefore grow by
themselves, and no call waits more than the batches ahead of it.

Deadlines: a call whose deadline has passed before its batch is taken is answered
DEADLINE_EXCEEDED without being scored: it is not recorded in the user's history, not
counted, not stored. Once taken, a call is scored with its batch."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fraudops.proto_gen.fraud.v1 import fraud_pb2
from serving import metrics
from serving.scoring import ScoredBatch

ScoreFn = Callable[[Sequence[Mapping[str, Any]], int], ScoredBatch]


class DeadlinePassed(Exception):
    """The call's deadline passed while it waited for its batch; it was not scored."""


@dataclass(slots=True, eq=False)
class _Call:
    tx: Mapping[str, Any]
    started_ns: int
    deadline: float | None  # time.monotonic(); None: the call has none
    answer: fraud_pb2.ScoreResponse | None = None
    error: BaseException | None = None
    lead: bool = False  # woken to score the batches, not with an answer
    woken: threading.Event = field(default_factory=threading.Event)

    def settled(self) -> bool:
        return self.answer is not None or self.error is not None


class ScoreBatcher:
    """Gathers concurrent Score calls into batches for `score` (see the module docstring)."""

    def __init__(self, score: ScoreFn, max_size: int, window_s: float = 0.0):
        if max_size < 1:
            raise ValueError(f"inline_batch_max must be at least 1, not {max_size}")
        self._score = score
        self._max = max_size
        self._window = window_s
        self._lock = threading.Lock()
        self._waiting: list[_Call] = []
        self._leading = False

    def score_one(
        self, tx: Mapping[str, Any], started_ns: int, time_remaining: float | None
    ) -> fraud_pb2.ScoreResponse:
        """The answer to one validated transaction, scored with whatever waits beside it."""
        deadline = None if time_remaining is None else time.monotonic() + time_remaining
        call = _Call(tx, started_ns, deadline)
        with self._lock:
            self._waiting.append(call)
            call.lead = not self._leading
            self._leading = True
        while not call.settled():
            if call.lead:
                self._lead(call)
            else:
                call.woken.wait()
                call.woken.clear()
        if call.error is not None:
            raise call.error
        return call.answer

    def _lead(self, mine: _Call) -> None:
        """Score batches until `mine` is answered, then hand the lead to a waiting call."""
        if self._window > 0 and len(self._waiting) < self._max:
            time.sleep(self._window)
        while not mine.settled():
            self._score_batch(self._take())
        with self._lock:
            mine.lead = False
            if self._waiting:
                self._waiting[0].lead = True
                self._waiting[0].woken.set()
            else:
                self._leading = False

    def _take(self) -> list[_Call]:
        """Up to max_size waiting calls; those whose deadline passed are answered so."""
        with self._lock:
            taken, self._waiting = self._waiting[: self._max], self._waiting[self._max :]
        now, live = time.monotonic(), []
        for call in taken:
            if call.deadline is not None and call.deadline <= now:
                metrics.INLINE_EXPIRED.inc()
                call.error = DeadlinePassed("deadline passed before the call was scored")
                call.woken.set()
            else:
                live.append(call)
        return live

    def _score_batch(self, calls: list[_Call]) -> None:
        if not calls:
            return
        metrics.INLINE_BATCH_SIZE.observe(len(calls))
        try:
            started = min(c.started_ns for c in calls)
            answers = self._score([c.tx for c in calls], started).responses()
        except Exception as err:  # noqa: BLE001 - every call of the batch gets it
            for call in calls:
                call.error = err
                call.woken.set()
            return
        for call, answer in zip(calls, answers, strict=True):
            call.answer = answer
            call.woken.set()
