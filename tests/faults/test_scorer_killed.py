"""The scorer SIGKILLed while it dead-letters: a third of the stream is invalid (negative
amounts), so the DLQ is being written when the process dies. Restarted, every invalid
message is on the DLQ (at least once: a batch produced but not committed is produced
again) and every valid one is stored once."""

from __future__ import annotations

import signal
import time

from fraudops.proto_gen.fraud.v1 import fraud_pb2
from tests.faults.support import Stream, resumed
from tests.helpers.serving_env import (
    consume,
    on_topic,
    scored_ids,
    service_process,
    stop_process,
    unique_ids,
    wait_until,
)

N = 3000


def test_a_scorer_killed_while_dead_lettering_loses_nothing_on_restart(
    v1_settings, database_url, kafka_settings, tmp_path, fault_report
):
    settings = v1_settings("fault-kill", database_url=database_url, scorer_batch_size=50)
    ids = unique_ids("fault-kill", N)
    stream = Stream(kafka_settings, settings.topic_raw, ids, invalid_every=3)
    invalid, valid = stream.invalid, [i for i in ids if i not in stream.invalid]
    url, dlq = settings.database_url, settings.topic_dlq
    with service_process("serving.scorer", settings, tmp_path / "scorer-1.log") as first:
        stream.start()
        wait_until(lambda: (on_topic(kafka_settings, dlq) or 0) >= 50, "the DLQ being written", 120)
        stop_process(first, signal.SIGKILL)
    killed, before = time.monotonic(), len(scored_ids(url, ids))
    assert before < len(valid), "killed too late: the stream was already done"
    with service_process("serving.scorer", settings, tmp_path / "scorer-2.log") as second:
        resumed(lambda: len(scored_ids(url, ids)), "the restarted scorer to write")
        recovery = time.monotonic() - killed
        stream.join()
        wait_until(lambda: len(scored_ids(url, ids)) == len(valid), "every valid one stored", 180)
        dead = consume(kafka_settings, dlq, len(invalid))
        assert second.poll() is None
    dead_ids = [fraud_pb2.TransactionRequest.FromString(m.value()).transaction_id for m in dead]
    rows = scored_ids(url, ids)
    fault_report(
        "scorer SIGKILLed while writing the DLQ", sent=N, scored=len(set(rows)),
        lost=len(valid) - len(set(rows)) + len(invalid - set(dead_ids)),
        twice=len(rows) - len(set(rows)), recovery_s=recovery,
        note=f"{len(invalid)} invalid: all on the DLQ, {len(dead_ids) - len(set(dead_ids))} "
        "of them twice (at-least-once)",
    )  # fmt: skip
    assert set(dead_ids) == invalid
    assert sorted(rows) == sorted(valid)
