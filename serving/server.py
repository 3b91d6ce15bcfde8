"""The gRPC front door (`fraudops-serve`): ingestion to Kafka, inline scoring, analysts'
labels, the standard health service and server reflection (so grpcurl works).

Every handler validates first and answers a bad request with INVALID_ARGUMENT naming the
field; anything unexpected becomes INTERNAL for that call only, and the server stays up.
Inline scoring is set up by serving.inline, as for the Stripe decide endpoint; its scores
are persisted by a background sink, never on the request path.

Concurrent Score calls are scored in batches (serving.batching): they share one Redis
script call, one model invoke and one sink hand-off, and a call whose deadline passes while
it waits is answered DEADLINE_EXCEEDED, unscored.

Every fraud.v1 call passes the caller check first (serving.callers.Gate: a bearer token or
a mutual-TLS certificate, and the method's scope); a call refused there never reaches its
handler. Health and reflection stay open: they reveal nothing a client could not learn
from the proto file.

With `FRAUDOPS_SERVER_WORKERS` above 1, a supervisor runs that many worker processes on one
port (SO_REUSEPORT: the kernel spreads connections over them), since one process is bound
by the GIL. Workers are spawned, not forked: each starts a fresh interpreter before any
gRPC server, channel, Kafka or Postgres client exists, and builds its own model store
(watching the served-model directory), producer and inline sink; they share the per-user
state through Redis (REDIS_URL). The supervisor forwards SIGTERM and, when a worker dies,
stops the others and exits non-zero rather than restarting it: a crash is then visible to
whatever runs the server (compose's restart policy, systemd), which restarts all of it,
instead of a crash loop hidden inside one process. Metrics: prometheus_client's
multiprocess mode, one endpoint on the supervisor aggregating every worker."""

from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import replace
from functools import wraps
from multiprocessing.connection import wait
from typing import Any

import grpc
import psycopg2
from confluent_kafka import KafkaException
from google.protobuf import empty_pb2, unknown_fields
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from psycopg2.pool import ThreadedConnectionPool

from fraudops.pii import configure_logging
from fraudops.proto_gen.fraud.v1 import fraud_pb2, fraud_pb2_grpc
from fraudops.schema import InvalidTransaction, TimestampWindow
from fraudops.settings import Settings, load_settings
from serving import callers, labels, metrics
from serving.batching import DeadlinePassed, ScoreBatcher
from serving.callers import CallerDirectory, Gate
from serving.inline import InlineScoring
from serving.kafka_io import AckingProducer, make_producer
from serving.model_store import LoadedModel
from serving.persistence import InlineScoreSink
from serving.scoring import NoModel, decode, decode_batch
from serving.tls import server_credentials

log = logging.getLogger(__name__)

FRAUD_SERVICES = tuple(
    fraud_pb2.DESCRIPTOR.services_by_name[name].full_name
    for name in ("FraudIngestion", "FraudScoring", "Feedback")
)
MAX_BATCH = 10_000
WORKER_METADATA_KEY = "fraudops-worker"  # trailing metadata: the pid that answered
WORKER_STOP_S = 30


class Undecodable:
    """A request whose bytes do not parse (a string field that is not UTF-8, or no message
    at all): handed to the handler, which answers INVALID_ARGUMENT naming the field, where
    grpc itself would answer INTERNAL."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem


def _bad_string_field(data: bytes, descriptor, prefix: str = "") -> str | None:
    """The first string field (nested messages included) of `data`, the wire bytes of a
    `descriptor` message, that is not UTF-8; None if there is none or `data` is garbage."""
    try:
        items = unknown_fields.UnknownFieldSet(empty_pb2.Empty.FromString(data))
    except DecodeError:
        return None
    seen: collections.Counter[str] = collections.Counter()
    for item in items:
        field = descriptor.fields_by_number.get(item.field_number)
        if field is None or item.wire_type != 2:  # 2: length-delimited (strings, messages)
            continue
        name = prefix + field.name
        if field.is_repeated:
            name, seen[field.name] = f"{name}[{seen[field.name]}]", seen[field.name] + 1
        if field.type == field.TYPE_STRING and not _is_utf8(item.data):
            return name
        nested = field.type == field.TYPE_MESSAGE
        if nested and (found := _bad_string_field(item.data, field.message_type, f"{name}.")):
            return found
    return None


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _lenient(message_class) -> Callable[[bytes], Any]:
    """A request deserializer that never raises: what does not parse becomes Undecodable."""

    def parse(data: bytes):
        try:
            return message_class.FromString(data)
        except DecodeError as err:
            field = _bad_string_field(data, message_class.DESCRIPTOR)
            if field is not None:
                return Undecodable(field, "not valid UTF-8")
            return Undecodable("message", f"not a {message_class.__name__} ({err})")

    return parse


def add_service(server: grpc.Server, name: str, servicer: Any) -> None:
    """Register a fraud.v1 service as its generated code would, but with lenient request
    parsing (see Undecodable)."""
    service = fraud_pb2.DESCRIPTOR.services_by_name[name]
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=_lenient(getattr(fraud_pb2, method.input_type.name)),
            response_serializer=getattr(fraud_pb2, method.output_type.name).SerializeToString,
        )
        for method in service.methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)


class RpcFailure(Exception):
    """Raised by a handler to answer with a given status."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def _status_for(err: Exception) -> tuple[grpc.StatusCode, str]:
    """The gRPC status a handler's exception maps to; the message is safe to return."""
    if isinstance(err, RpcFailure | callers.Refused):
        return err.code, str(err)
    if isinstance(err, DeadlinePassed):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(err)
    if isinstance(err, labels.UnknownTransaction):
        return grpc.StatusCode.NOT_FOUND, str(err)
    if isinstance(err, InvalidTransaction | labels.LabelError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(err)
    if isinstance(err, NoModel):
        return grpc.StatusCode.UNAVAILABLE, "no model loaded yet; retry shortly"
    if isinstance(err, KafkaException | TimeoutError):
        return grpc.StatusCode.UNAVAILABLE, f"Kafka did not take the message: {err}"
    if isinstance(err, psycopg2.Error):
        return grpc.StatusCode.UNAVAILABLE, "database unavailable; retry shortly"
    return grpc.StatusCode.INTERNAL, "internal error"


def rpc(name: str) -> Callable:
    """Admit the caller (the servicer's `gate`), time the handler, which is given the
    caller, and turn its exceptions into a status, never a crash."""
    histogram = metrics.RPC_LATENCY.labels(rpc=name)

    def decorate(handler: Callable) -> Callable:
        @wraps(handler)
        def wrapper(self, request, context):
            started = time.perf_counter()
            context.set_trailing_metadata(((WORKER_METADATA_KEY, str(os.getpid())),))
            try:
                caller = self.gate.admit(context, name)
                if isinstance(request, Undecodable):
                    message = f"{request.field}: {request.problem}"
                    raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, message)
                return handler(self, request, context, caller)
            except Exception as err:  # noqa: BLE001 - mapped to a status below
                code, message = _status_for(err)
                if code == grpc.StatusCode.INTERNAL:
                    log.exception("%s failed", name)
                if isinstance(err, callers.Refused):
                    metrics.AUTH_REFUSED.labels(rpc=name, code=code.name).inc()
                metrics.RPC_ERRORS.labels(rpc=name, code=code.name).inc()
                context.abort(code, message)
            finally:
                histogram.observe(time.perf_counter() - started)

        return wrapper

    return decorate


class Ingestion(fraud_pb2_grpc.FraudIngestionServicer):
    def __init__(self, gate: Gate, producer: AckingProducer, topic: str, window: TimestampWindow):
        self.gate = gate
        self._producer = producer
        self._topic = topic
        self._window = window

    @rpc("SendTransaction")
    def SendTransaction(self, request, context, caller):
        decode(request, window=self._window)
        partition, offset = self._producer.send(
            self._topic, str(request.user_id), request.SerializeToString()
        )
        return fraud_pb2.SendAck(
            transaction_id=request.transaction_id, partition=partition, offset=offset
        )


class Scoring(fraud_pb2_grpc.FraudScoringServicer):
    """Score calls are validated one by one and scored in batches of concurrent calls;
    a ScoreBatch call is its own batch."""

    def __init__(self, gate: Gate, inline: InlineScoring, batcher: ScoreBatcher):
        self.gate = gate
        self._inline = inline
        self._batcher = batcher
        self._window = inline.window

    @rpc("Score")
    def Score(self, request, context, caller):
        started = time.perf_counter_ns()
        tx = decode(request, window=self._window)
        return self._batcher.score_one(tx, started, context.time_remaining())

    @rpc("ScoreBatch")
    def ScoreBatch(self, request, context, caller):
        started = time.perf_counter_ns()
        if len(request.transactions) > MAX_BATCH:
            raise InvalidTransaction("transactions", f"more than {MAX_BATCH} in one batch")
        batch = self._inline.score(decode_batch(request.transactions, self._window), started)
        return fraud_pb2.ScoreBatchResponse(scores=batch.responses())


class FeedbackService(fraud_pb2_grpc.FeedbackServicer):
    """Labels go through serving.labels.record_label, like those arriving over Kafka, once
    the label's source is one its caller may write."""

    def __init__(
        self, gate: Gate, pool: ThreadedConnectionPool | None, sink: InlineScoreSink | None
    ):
        self.gate = gate
        self._pool = pool
        self._sink = sink

    def _record(self, request) -> labels.LabelResult:
        conn = self._pool.getconn()
        broken = False
        try:
            return labels.record_label(
                conn, request.transaction_id, request.label, request.source, request.note
            )
        except psycopg2.Error:
            broken = True
            raise
        finally:
            self._pool.putconn(conn, close=broken)

    @rpc("SubmitLabel")
    def SubmitLabel(self, request, context, caller):
        if self._pool is None:
            raise RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, "no database configured")
        labels.validate_label(request.transaction_id, request.label, request.source, request.note)
        callers.check_source(caller, request.source)
        try:
            result = self._record(request)
        except labels.UnknownTransaction:
            # An inline score may still be on its way to the table: wait for it once.
            if self._sink is None or not self._sink.flush(timeout=5.0):
                raise
            result = self._record(request)
        return fraud_pb2.LabelAck(
            transaction_id=result.transaction_id,
            label=fraud_pb2.Label.Value(result.label),
            superseded_previous=result.superseded,
        )


class ServingApp:
    """The server's parts wired together, with an orderly start and stop."""

    def __init__(self, settings: Settings, max_workers: int = 16, reuse_port: bool = False):
        self.settings = settings
        self._reuse_port = reuse_port
        self.port: int | None = None
        self.inline = InlineScoring(settings, "server", prewarm=min(max_workers, 8))
        self.batcher = ScoreBatcher(self.inline.score, settings.inline_batch_max,
                                    settings.inline_batch_window_us / 1e6)  # fmt: skip
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self._max_workers = max_workers
        self._server: grpc.Server | None = None
        self._pool: ThreadedConnectionPool | None = None
        self._producer: AckingProducer | None = None
        self.callers = CallerDirectory(settings.database_url, settings.caller_refresh_s)
        self._gate = Gate(
            self.callers, callers.anonymous_methods(settings), mtls=settings.tls_ca is not None
        )

    def _set_health(self, model: LoadedModel | None) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if model
            else (health_pb2.HealthCheckResponse.NOT_SERVING)
        )
        for service in ("", *FRAUD_SERVICES):
            self.health.set(service, status)

    def _build(self) -> grpc.Server:
        s = self.settings
        window = self.inline.window
        server = grpc.server(
            futures.ThreadPoolExecutor(self._max_workers, thread_name_prefix="grpc"),
            options=[("grpc.so_reuseport", int(self._reuse_port))],
        )
        gate = self._gate
        add_service(server, "FraudIngestion", Ingestion(gate, self._producer, s.topic_raw, window))
        add_service(server, "FraudScoring", Scoring(gate, self.inline, self.batcher))
        add_service(server, "Feedback", FeedbackService(gate, self._pool, self.inline.sink))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (*FRAUD_SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        address = f"{s.grpc_host}:{s.grpc_port}"
        credentials = server_credentials(s)
        if credentials is None:
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, credentials)
        return server

    def start(self) -> int:
        """Load the model, start watching, connect Kafka and Postgres, serve; returns the port."""
        s = self.settings
        self._set_health(None)
        self.inline.store.on_swap(self._set_health)
        self.inline.start()
        self.callers.start()
        self._producer = AckingProducer(make_producer(s))
        if s.database_url:
            self._pool = ThreadedConnectionPool(1, self._max_workers, s.database_url)
        self._server = self._build()
        self._server.start()
        log.info("serving gRPC on %s:%d (%s)", s.grpc_host, self.port,
                 "TLS" if s.tls_cert else "plain text, loopback only")  # fmt: skip
        return self.port

    def stop(self, grace: float = 5.0) -> None:
        """Finish in-flight calls, then drain the inline sink and the producer."""
        self.health.enter_graceful_shutdown()
        if self._server is not None:
            self._server.stop(grace).wait()
        self.inline.stop()
        self.callers.stop()
        if self._producer is not None:
            self._producer.close()
        if self._pool is not None:
            self._pool.closeall()
        log.info("server stopped")


def wait_for_signal() -> None:
    """Block until SIGTERM or SIGINT."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


def serve(settings: Settings, threads: int, reuse_port: bool = False) -> None:
    """Run one server process until SIGTERM or SIGINT."""
    configure_logging(settings.log_level)
    app = ServingApp(settings, max_workers=threads, reuse_port=reuse_port)
    app.start()
    wait_for_signal()
    app.stop()


@contextlib.contextmanager
def reserved_port(host: str, port: int) -> Iterator[int]:
    """Bind (not listen on) host:port with SO_REUSEPORT while the workers run: port 0
    becomes one fixed port they all share, and a port held by a server that does not
    share it fails here, once. A socket that is not listening is given no connections."""
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        yield sock.getsockname()[1]


def _stop_workers(procs: list) -> None:
    for proc in procs:
        if proc.is_alive():
            proc.terminate()  # SIGTERM: the worker drains its calls, sink and producer
    for proc in procs:
        proc.join(WORKER_STOP_S)
        if proc.is_alive():
            log.warning("worker pid %d still running after %d s; killing", proc.pid,
                        WORKER_STOP_S)  # fmt: skip
            proc.kill()
            proc.join()


def supervise(settings: Settings, threads: int) -> int:
    """Run `settings.server_workers` worker processes on one port until SIGTERM or SIGINT
    (0 once they all stopped cleanly) or until one dies (the rest are stopped; 1)."""
    from prometheus_client import multiprocess

    metrics_dir = tempfile.mkdtemp(prefix="fraudops-metrics-")
    os.environ[metrics.MULTIPROC_ENV] = metrics_dir  # the spawned workers inherit it
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    context = multiprocessing.get_context("spawn")
    try:
        with reserved_port(settings.grpc_host, settings.grpc_port) as port:
            worker_settings = replace(settings, grpc_port=port)
            procs = [
                context.Process(target=serve, args=(worker_settings, threads, True),
                                name=f"fraudops-serve-{n}")
                for n in range(settings.server_workers)
            ]  # fmt: skip
            for proc in procs:
                proc.start()
            metrics.serve_aggregated(settings.metrics_port, metrics_dir)
            log.info("supervising %d server workers on port %d (pids %s)", len(procs), port,
                     ", ".join(str(p.pid) for p in procs))  # fmt: skip
            while not stop.is_set() and all(p.is_alive() for p in procs):
                wait([p.sentinel for p in procs], timeout=0.5)
            died = [p for p in procs if not p.is_alive()] if not stop.is_set() else []
            for proc in died:
                log.error("worker pid %d exited with %s; stopping the others", proc.pid,
                          proc.exitcode)  # fmt: skip
            _stop_workers(procs)
            for proc in procs:
                multiprocess.mark_process_dead(proc.pid, metrics_dir)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    clean = not died and all(p.exitcode == 0 for p in procs)
    log.info("server supervisor stopped (%s)", "clean" if clean else "a worker failed")
    return 0 if clean else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fraudops gRPC scoring server")
    parser.add_argument("--port", type=int, help="overrides FRAUDOPS_GRPC_PORT")
    parser.add_argument("--workers", type=int, default=16, help="gRPC threads per process")
    args = parser.parse_args(argv)
    settings = load_settings()
    if args.port is not None:
        settings = replace(settings, grpc_port=args.port)
    configure_logging(settings.log_level)
    if settings.server_workers > 1 and not settings.redis_url:
        log.error("FRAUDOPS_SERVER_WORKERS=%d needs REDIS_URL: each worker would keep its own "
                  "per-user history, and a score would depend on which one answered",
                  settings.server_workers)  # fmt: skip
        return 2
    if settings.server_workers > 1:
        return supervise(settings, args.workers)
    metrics.serve(settings.metrics_port)
    serve(settings, args.workers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
