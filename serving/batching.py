"""Dynamic batching of concurrent inline Score calls, as model servers do: calls that wait at
the same time are scored together, so they share one Redis script call, one TFLite invoke,
one rules pass and one hand-off to the sink, and a call costs the server a share of that
fixed work instead of all of it.

One scoring thread takes the batches in turn (the feature state's Redis round trip and the
model release the GIL, so the event loop keeps taking calls meanwhile). A call arriving when
the thread is idle starts a batch at once, or after `window_s` if one is set (bounded: a lone
caller waits that long at most); calls arriving while a batch is being scored wait for it
and form the next one, up to `max_size`. Under load batches therefore grow by themselves,
and a lone caller is never held back beyond the window.

Deadlines: a call whose deadline has passed, or which its client cancelled, before its batch
is taken is answered DEADLINE_EXCEEDED (or dropped) without being scored: it is not recorded
in the user's history, not counted, not stored. Once taken, a call is scored with its batch."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fraudops.proto_gen.fraud.v1 import fraud_pb2
from serving import metrics
from serving.scoring import ScoredBatch

ScoreFn = Callable[[Sequence[Mapping[str, Any]], int], ScoredBatch]


class DeadlinePassed(Exception):
    """The call's deadline passed while it waited for its batch; it was not scored."""


@dataclass(slots=True)
class _Waiting:
    tx: Mapping[str, Any]
    started_ns: int
    deadline: float | None  # on the event loop's clock; None: the call has none
    future: asyncio.Future


class ScoreBatcher:
    """Gathers concurrent Score calls of one event loop into batches for `score` (see the
    module docstring). Call `score_one` from the loop; `close` stops the scoring thread."""

    def __init__(self, score: ScoreFn, max_size: int, window_s: float = 0.0):
        if max_size < 1:
            raise ValueError(f"inline_batch_max must be at least 1, not {max_size}")
        self._score = score
        self._max = max_size
        self._window = window_s
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._busy = False
        self._timer: asyncio.TimerHandle | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="inline-batch")

    async def score_one(
        self, tx: Mapping[str, Any], started_ns: int, time_remaining: float | None
    ) -> fraud_pb2.ScoreResponse:
        """The answer to one validated transaction, scored with whatever waits beside it."""
        loop = asyncio.get_running_loop()
        deadline = None if time_remaining is None else loop.time() + time_remaining
        waiting = _Waiting(tx, started_ns, deadline, loop.create_future())
        self._waiting.append(waiting)
        if not self._busy:
            if self._window <= 0 or len(self._waiting) >= self._max:
                self._start()
            elif self._timer is None:
                self._timer = loop.call_later(self._window, self._start)
        return await waiting.future

    def _take(self) -> list[_Waiting]:
        """Up to max_size waiting calls still worth scoring; the expired ones are answered."""
        now = asyncio.get_running_loop().time()
        taken: list[_Waiting] = []
        while self._waiting and len(taken) < self._max:
            call = self._waiting.popleft()
            if call.future.done():  # cancelled by its client
                continue
            if call.deadline is not None and call.deadline <= now:
                metrics.INLINE_EXPIRED.inc()
                call.future.set_exception(DeadlinePassed("deadline passed before scoring"))
                continue
            taken.append(call)
        return taken

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._busy:
            return
        taken = self._take()
        if not taken:
            return
        self._busy = True
        metrics.INLINE_BATCH_SIZE.observe(len(taken))
        txs, started = [c.tx for c in taken], min(c.started_ns for c in taken)
        work = asyncio.get_running_loop().run_in_executor(self._thread, self._answers, txs, started)
        work.add_done_callback(lambda done: self._finish(taken, done))

    def _answers(self, txs: list, started_ns: int) -> list[fraud_pb2.ScoreResponse]:
        return self._score(txs, started_ns).responses()

    def _finish(self, taken: list[_Waiting], done: asyncio.Future) -> None:
        self._busy = False
        err = done.exception()
        for k, call in enumerate(taken):
            if call.future.done():
                continue
            if err is not None:
                call.future.set_exception(err)
            else:
                call.future.set_result(done.result()[k])
        if self._waiting:
            self._start()

    def close(self) -> None:
        self._thread.shutdown(wait=True)
