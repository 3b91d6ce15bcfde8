"""Inline capacity: Score calls per second that `clients` concurrent clients get from a
server of one or more worker processes, each client on a connection of its own, so the
kernel spreads connections over the server's workers (SO_REUSEPORT).

Two load generators, side by side: Python gRPC clients (threads spread over spawned client
processes, since one process's GIL would cap them first) and, when it is built, the Go
client in bench/loadgen (`make bench-tools`), which sends the same transactions serialized
beforehand and costs a small fraction of the Python clients' CPU per call. On a
machine with few cores the clients compete with the server for them: each result carries
the load average, the clients' CPU per call, and the server's own CPU per call (all its
processes), which does not depend on free cores."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import resource
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench.common import transactions
from fraudops.grpc_client import bearer_metadata
from fraudops.proto_gen.fraud.v1 import fraud_pb2_grpc

CLIENT_PROCESSES = 4
READY_TIMEOUT_S = 120  # client processes import, connect and warm up before the common start
LOADGEN = Path(__file__).resolve().parents[1] / "build/bench/loadgen"  # make bench-tools


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
    client: str = "Python"
    client_cpu_s: float = float("nan")
    connections_per_worker: list[int] | None = None  # known for the Go client

    @property
    def cpu_us_per_call(self) -> float:
        return self.server_cpu_s / self.calls * 1e6 if self.calls else float("nan")

    @property
    def client_us_per_call(self) -> float:
        return self.client_cpu_s / self.calls * 1e6 if self.calls else float("nan")

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


def _client_process(port: int, token: str | None, threads: int, seconds: float, seed: int,
                    ready, go, out):  # fmt: skip
    """`threads` back-to-back callers with `token`, each connected and warm before it
    reports ready, calling for `seconds` once `go` is set; puts (calls, errors)."""
    metadata = bearer_metadata(token)
    txs = transactions(4000, users=5000, seed=seed, prefix=f"cap{seed}-{os.getpid()}")
    calls, errors = [0] * threads, [0] * threads

    def caller(k: int) -> None:
        with _channel(port) as channel:
            stub = fraud_pb2_grpc.FraudScoringStub(channel)
            stub.Score(txs[k], timeout=30, metadata=metadata)
            ready.put(1)
            go.wait()
            deadline, i = time.monotonic() + seconds, k
            while time.monotonic() < deadline:
                try:
                    stub.Score(txs[i % len(txs)], timeout=10, metadata=metadata)
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


def wait_for_workers(port: int, n: int, token: str | None, attempts: int = 200) -> set[str]:
    """Open connections until `n` distinct worker processes have answered a Score (each
    answer names its pid in trailing metadata); the pids seen."""
    from serving.server import WORKER_METADATA_KEY  # not in the client processes' imports

    seen: set[str] = set()
    txs = transactions(attempts, users=50, seed=3, prefix=f"warm-{os.getpid()}")
    for tx in txs:
        with _channel(port) as channel:
            stub = fraud_pb2_grpc.FraudScoringStub(channel)
            _, call = stub.Score.with_call(tx, timeout=30, metadata=bearer_metadata(token))
        seen.add(dict(call.trailing_metadata())[WORKER_METADATA_KEY])
        if len(seen) >= n:
            return seen
    raise RuntimeError(f"only {len(seen)} of {n} server workers answered")


def measure(
    port: int, token: str | None, server_pid: int, processes: int, clients: int, seconds: float
) -> CapacityResult:
    context = multiprocessing.get_context("spawn")
    ready, go, out = context.Queue(), context.Event(), context.Queue()
    per_process = [clients // CLIENT_PROCESSES + (k < clients % CLIENT_PROCESSES)
                   for k in range(CLIENT_PROCESSES)]  # fmt: skip
    procs = [
        context.Process(target=_client_process, args=(port, token, t, seconds, k, ready, go, out))
        for k, t in enumerate(per_process)
        if t
    ]
    for p in procs:
        p.start()
    for _ in range(clients):
        ready.get(timeout=READY_TIMEOUT_S)
    load_before, cpu_before = os.getloadavg()[0], cpu_seconds(server_pid)
    children_before = children_cpu_seconds()
    go.set()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    load_after, cpu = os.getloadavg()[0], cpu_seconds(server_pid) - cpu_before
    for p in procs:
        p.join(30)
    # The clients' CPU includes their start-up and warm-up: an upper bound.
    clients_cpu = children_cpu_seconds() - children_before
    calls, errors = (sum(r[i] for r in results) for i in (0, 1))
    return CapacityResult(processes, clients, seconds, calls, errors, load_before, load_after, cpu,
                          "Python", clients_cpu)  # fmt: skip


def children_cpu_seconds() -> float:
    """User + system CPU time of this process's children that have been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def find_loadgen() -> Path | None:
    """The Go load generator, as `make bench-tools` builds it (or $FRAUDOPS_LOADGEN)."""
    path = Path(os.environ.get("FRAUDOPS_LOADGEN") or LOADGEN)
    return path if os.access(path, os.X_OK) else None


def loadgen_requests(path: Path, n: int, tag: str) -> Path:
    """`n` serialized transactions, each a 4-byte big-endian length then the bytes."""
    with path.open("wb") as out:
        for tx in transactions(n, users=5000, seed=4, prefix=tag):
            data = tx.SerializeToString()
            out.write(struct.pack(">I", len(data)) + data)
    return path


def run_loadgen(
    binary: Path, port: int, clients: int, seconds: float, requests: Path, token: str | None
) -> dict:
    """One run: `clients` connections, one back-to-back caller each, sending `token`; its
    JSON report (calls, errors by code, p50/p99 in ms, the client's CPU)."""
    command = [str(binary), "-addr", f"127.0.0.1:{port}", "-connections", str(clients),
               "-duration", f"{seconds}s", "-requests", str(requests),
               "-token", token or ""]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed ({done.returncode}): {done.stderr.strip()}")
    return json.loads(done.stdout)


def measure_go(
    binary: Path, port: int, server_pid: int, processes: int, clients: int, seconds: float,
    work: Path, token: str | None,
) -> CapacityResult:  # fmt: skip
    """The same load from the Go client: a short warm-up run, then the measured one, each
    call a transaction not sent before."""
    needed = int(seconds * 10_000) + 2_000 * clients  # more than this machine can answer
    requests = loadgen_requests(work / f"go-{processes}p.bin", needed, f"go{processes}p")
    warmup = loadgen_requests(work / f"go-{processes}p-warm.bin", 4000, f"go{processes}w")
    run_loadgen(binary, port, clients, 2.0, warmup, token)
    load_before, cpu_before = os.getloadavg()[0], cpu_seconds(server_pid)
    report = run_loadgen(binary, port, clients, seconds, requests, token)
    load_after, cpu = os.getloadavg()[0], cpu_seconds(server_pid) - cpu_before
    if report["repeated"]:
        raise RuntimeError(f"loadgen repeated {report['repeated']} requests: make more")
    return CapacityResult(processes, clients, report["seconds"], report["calls"],
                          report["errors"], load_before, load_after, cpu, "Go",
                          report["cpu_seconds"], sorted(report["workers"].values()))  # fmt: skip


def report(results: list[CapacityResult], go_missing: bool = False) -> list[str]:
    """One block per load generator: the rate with 1 and 2 server processes and the ratio."""
    first = results[0]
    lines = [
        f"inline capacity, {first.clients} concurrent clients (one connection each), "
        f"{first.seconds:.0f} s each, Redis state:"
    ]
    for client in dict.fromkeys(r.client for r in results):
        mine = [r for r in results if r.client == client]
        how = f"{CLIENT_PROCESSES} client processes" if client == "Python" else "one Go process"
        lines.append(f"  {client} gRPC clients ({how}):")
        for r in mine:
            lines.append(
                f"    {r.server_processes} server process(es): {r.rate:7.0f} Score/s  "
                f"({r.calls} calls, {r.errors} errors; server CPU {r.cpu_us_per_call:.0f} "
                f"µs/call, clients' CPU {r.client_us_per_call:.0f} µs/call; load average "
                f"{r.load_before:.2f} -> {r.load_after:.2f} on {os.cpu_count()} cores)"
            )
            if r.connections_per_worker:
                spread = " + ".join(map(str, r.connections_per_worker))
                lines.append(f"      connections per server worker: {spread}")
        if len(mine) > 1:
            ratio = mine[1].rate / mine[0].rate
            lines.append(
                f"    {mine[1].server_processes} vs {mine[0].server_processes}: {ratio:.2f}x "
                "(target >= 1.7x; the clients share the same cores)"
            )
    if go_missing:
        lines.append(f"  the Go load generator is not built ({LOADGEN}): skipped; "
                     "`make bench-tools` builds it (needs Go)")  # fmt: skip
    return lines
