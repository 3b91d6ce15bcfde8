"""Inline capacity: Score calls per second that `clients` concurrent clients get from a
server of one or more worker processes. The clients are threads spread over spawned client
processes (one process's GIL would cap them first), each thread on a connection of its own,
so the kernel spreads connections over the server's workers. On a machine with few cores
the clients compete with the server for them: the load average is reported beside, and the
server's own CPU time per call (all its processes), which does not depend on free cores."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench.common import transactions
from fraudops.proto_gen.fraud.v1 import fraud_pb2_grpc

CLIENT_PROCESSES = 4
READY_TIMEOUT_S = 120  # client processes import, connect and warm up before the common start


@dataclass
class CapacityResult:
    server_processes: int
    clients: int
    seconds: float
    calls: int
    errors: int
    load_before: float
    load_after: float
    server_cpu_s: float

    @property
    def cpu_us_per_call(self) -> float:
        return self.server_cpu_s / self.calls * 1e6 if self.calls else float("nan")

    @property
    def rate(self) -> float:
        return self.calls / self.seconds


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (the server's workers)."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(c) for c in children.read_text().split()]
    ticks = 0
    for p in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _channel(port: int) -> grpc.Channel:
    """A channel with its own TCP connection (no subchannel shared between channels)."""
    return grpc.insecure_channel(f"127.0.0.1:{port}", [("grpc.use_local_subchannel_pool", 1)])


def _client_process(port: int, threads: int, seconds: float, seed: int, ready, go, out):
    """`threads` back-to-back callers, each connected and warm before it reports ready,
    calling for `seconds` once `go` is set; puts (calls, errors)."""
    txs = transactions(4000, users=5000, seed=seed, prefix=f"cap{seed}-{os.getpid()}")
    calls, errors = [0] * threads, [0] * threads

    def caller(k: int) -> None:
        with _channel(port) as channel:
            stub = fraud_pb2_grpc.FraudScoringStub(channel)
            stub.Score(txs[k], timeout=30)
            ready.put(1)
            go.wait()
            deadline, i = time.monotonic() + seconds, k
            while time.monotonic() < deadline:
                try:
                    stub.Score(txs[i % len(txs)], timeout=10)
                    calls[k] += 1
                except grpc.RpcError:
                    errors[k] += 1
                i += threads

    workers = [threading.Thread(target=caller, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put((sum(calls), sum(errors)))


def wait_for_workers(port: int, n: int, attempts: int = 200) -> set[str]:
    """Open connections until `n` distinct worker processes have answered a Score (each
    answer names its pid in trailing metadata); the pids seen."""
    from serving.server import WORKER_METADATA_KEY  # not in the client processes' imports

    seen: set[str] = set()
    txs = transactions(attempts, users=50, seed=3, prefix=f"warm-{os.getpid()}")
    for tx in txs:
        with _channel(port) as channel:
            _, call = fraud_pb2_grpc.FraudScoringStub(channel).Score.with_call(tx, timeout=30)
        seen.add(dict(call.trailing_metadata())[WORKER_METADATA_KEY])
        if len(seen) >= n:
            return seen
    raise RuntimeError(f"only {len(seen)} of {n} server workers answered")


def measure(
    port: int, server_pid: int, processes: int, clients: int, seconds: float
) -> CapacityResult:
    context = multiprocessing.get_context("spawn")
    ready, go, out = context.Queue(), context.Event(), context.Queue()
    per_process = [clients // CLIENT_PROCESSES + (k < clients % CLIENT_PROCESSES)
                   for k in range(CLIENT_PROCESSES)]  # fmt: skip
    procs = [
        context.Process(target=_client_process, args=(port, t, seconds, k, ready, go, out))
        for k, t in enumerate(per_process)
        if t
    ]
    for p in procs:
        p.start()
    for _ in range(clients):
        ready.get(timeout=READY_TIMEOUT_S)
    load_before, cpu_before = os.getloadavg()[0], cpu_seconds(server_pid)
    go.set()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    load_after, cpu = os.getloadavg()[0], cpu_seconds(server_pid) - cpu_before
    for p in procs:
        p.join(30)
    calls, errors = (sum(r[i] for r in results) for i in (0, 1))
    return CapacityResult(processes, clients, seconds, calls, errors, load_before, load_after, cpu)


def report(results: list[CapacityResult]) -> list[str]:
    first = results[0]
    lines = [
        f"inline capacity, {first.clients} concurrent clients ({CLIENT_PROCESSES} client "
        f"processes), {first.seconds:.0f} s each, Redis state:"
    ]
    for r in results:
        lines.append(
            f"  {r.server_processes} server process(es): {r.rate:7.0f} Score/s  "
            f"({r.calls} calls, {r.errors} errors; server CPU {r.cpu_us_per_call:.0f} µs/call; "
            f"load average {r.load_before:.2f} -> {r.load_after:.2f} on {os.cpu_count()} cores)"
        )
    if len(results) > 1:
        ratio = results[1].rate / first.rate
        lines.append(f"  {results[1].server_processes} vs {first.server_processes}: {ratio:.2f}x "
                     "(target >= 1.7x; the clients share the same cores)")  # fmt: skip
    return lines
