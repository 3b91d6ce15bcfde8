"""The served model and its hot reload.

`ModelStore.current` is one reference to an immutable `LoadedModel`; a reload builds and
checks the new model on the watcher's thread, then replaces the reference in one
assignment. A request reads the reference once and uses that model to the end, so a swap
never fails, blocks or mixes two models inside one request. TFLite interpreters are not
thread-safe: each model keeps a pool of runners (one interpreter per batch-size bucket),
and a request borrows one for the length of an `invoke`.

models/serving/ is watched with watchdog. `fraudops.modelspec.publish` renames a finished
directory into place, which inotify reports as a *moved* event whose destination is the
new version; a directory copied in by hand arrives as created/modified events. Both are
debounced, hidden names (`.tmp-*`) are ignored, and a model that fails its checks is
rejected with a log line and an audit row while the old one keeps serving."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from fraudops.bands import Explainer
from fraudops.features import N_FEATURES
from fraudops.modelspec import MODEL_FILE, ModelSpecError, published_versions, read_spec
from serving import metrics

try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:  # the predecessor package, where ai-edge-litert is not available
    from tflite_runtime.interpreter import Interpreter

log = logging.getLogger(__name__)

# Batches are padded up to a power of two, so each runner allocates at most this many
# tensor shapes; larger batches are cut into MAX_BUCKET chunks.
MAX_BUCKET = 4096
DEFAULT_TOLERANCE = 1e-4


class ModelRejected(Exception):
    """A model directory failed a check; the message says which and why."""


def _bucket(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class _Runner:
    """Interpreters for one model owned by one borrower at a time, one per bucket size."""

    def __init__(self, content: bytes):
        self._content = content
        self._by_bucket: dict[int, tuple[Any, int, int]] = {}

    def _interpreter(self, bucket: int) -> tuple[Any, int, int]:
        entry = self._by_bucket.get(bucket)
        if entry is None:
            interp = Interpreter(model_content=self._content, num_threads=1)
            in_idx = interp.get_input_details()[0]["index"]
            interp.resize_tensor_input(in_idx, [bucket, N_FEATURES])
            interp.allocate_tensors()
            entry = (interp, in_idx, interp.get_output_details()[0]["index"])
            self._by_bucket[bucket] = entry
        return entry

    def run(self, x: np.ndarray) -> np.ndarray:
        """Scores of a float32 (N, F) array, as float32 (N,)."""
        n = len(x)
        out = np.empty(n, dtype=np.float32)
        for start in range(0, n, MAX_BUCKET):
            chunk = x[start : start + MAX_BUCKET]
            size = len(chunk)
            bucket = _bucket(size)
            interp, in_idx, out_idx = self._interpreter(bucket)
            if size != bucket:
                padded = np.zeros((bucket, N_FEATURES), dtype=np.float32)
                padded[:size] = chunk
                chunk = padded
            interp.set_tensor(in_idx, chunk)
            interp.invoke()
            out[start : start + size] = interp.get_tensor(out_idx).reshape(-1)[:size]
        return out


@dataclass
class LoadedModel:
    """A checked model, immutable once built; share it freely between threads."""

    version: str
    path: Path
    spec: dict[str, Any]
    content: bytes = field(repr=False)
    explainer: Explainer = field(repr=False)
    _pool: queue.SimpleQueue = field(default_factory=queue.SimpleQueue, repr=False)

    @property
    def thresholds(self) -> dict[str, float]:
        return self.spec["thresholds"]

    @property
    def published_at(self) -> str:
        return self.spec["published_at"]

    @property
    def mlflow_run_id(self) -> str:
        return str(self.spec.get("mlflow_run_id", ""))

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Fraud probabilities of a float32 (N, F) batch; safe from any thread."""
        try:
            runner = self._pool.get_nowait()
        except queue.Empty:
            runner = _Runner(self.content)
        try:
            return runner.run(np.ascontiguousarray(features, dtype=np.float32))
        finally:
            self._pool.put(runner)

    def prewarm(self, runners: int, buckets: tuple[int, ...] = (1, 8)) -> None:
        """Build interpreters ahead of the first requests, off the request path."""
        for _ in range(runners):
            runner = _Runner(self.content)
            for bucket in buckets:
                runner.run(np.zeros((bucket, N_FEATURES), dtype=np.float32))
            self._pool.put(runner)


def _check_signature(content: bytes) -> None:
    """The interpreter loads and its tensors match the feature contract: (N, F) -> (N, 1)."""
    try:
        interp = Interpreter(model_content=content, num_threads=1)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        raise ModelRejected(f"{MODEL_FILE} does not load: {err}") from err
    inputs, outputs = interp.get_input_details(), interp.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelRejected(f"expected 1 input and 1 output, got {len(inputs)} and {len(outputs)}")
    in_shape = list(inputs[0]["shape_signature"])
    if len(in_shape) != 2 or in_shape[1] != N_FEATURES or inputs[0]["dtype"] != np.float32:
        raise ModelRejected(f"input is {in_shape} {inputs[0]['dtype']}, need [-1, {N_FEATURES}]")
    out_shape = list(outputs[0]["shape_signature"])
    if out_shape not in ([-1, 1], [-1], [1, 1], [1]):
        raise ModelRejected(f"output is {out_shape}, need [-1, 1]")
    if in_shape[0] not in (-1, 1):
        raise ModelRejected(f"input batch dimension is {in_shape[0]}, need -1")


def _check_golden(model: LoadedModel) -> float:
    """Score the golden inputs stored in model.json; return the largest error."""
    golden = model.spec["golden"]
    inputs = np.asarray(golden["inputs"], dtype=np.float32)
    expected = np.asarray(golden["outputs"], dtype=np.float64).reshape(-1)
    if inputs.ndim != 2 or inputs.shape[1] != N_FEATURES:
        raise ModelRejected(f"golden inputs have shape {inputs.shape}, need (n, {N_FEATURES})")
    got = model.predict(inputs).astype(np.float64)
    error = float(np.max(np.abs(got - expected)))
    tolerance = float(golden.get("tolerance", DEFAULT_TOLERANCE))
    if not error <= tolerance:
        raise ModelRejected(f"golden outputs off by {error:.3g} (tolerance {tolerance:g})")
    return error


def load_model(model_dir: Path, prewarm: int = 2) -> LoadedModel:
    """Load and check one version directory; raise ModelRejected naming the problem."""
    model_dir = Path(model_dir)
    try:
        spec = read_spec(model_dir)
        content = (model_dir / MODEL_FILE).read_bytes()
    except ModelSpecError as err:
        raise ModelRejected(str(err)) from err
    except OSError as err:
        raise ModelRejected(f"{model_dir / MODEL_FILE}: unreadable ({err})") from err
    if spec["version"] != model_dir.name:
        raise ModelRejected(
            f"model.json says version {spec['version']!r}, the directory is {model_dir.name!r}"
        )
    declared = spec.get("input", {}).get("shape", [-1, N_FEATURES])
    if list(declared)[-1:] != [N_FEATURES]:
        raise ModelRejected(f"model.json input shape {declared} does not end in {N_FEATURES}")
    _check_signature(content)
    try:
        explainer = Explainer(spec["explain"])
    except (KeyError, TypeError, ValueError) as err:
        raise ModelRejected(f"model.json explain block unusable: {err}") from err
    model = LoadedModel(spec["version"], model_dir, spec, content, explainer)
    _check_golden(model)
    model.prewarm(prewarm)
    return model


class Recorder(Protocol):
    """Where swaps and rejections are recorded (serving.persistence.DeploymentRecorder)."""

    def reload(self, old: LoadedModel | None, new: LoadedModel, reason: str) -> None: ...

    def reload_rejected(self, path: Path, problem: str, serving: str | None) -> None: ...


class ModelStore:
    """Holds the served model; loads, checks and swaps new versions off the request path."""

    def __init__(
        self,
        serving_root: Path,
        recorder: Recorder | None = None,
        prewarm: int = 2,
        debounce_seconds: float = 0.15,
    ):
        self.serving_root = Path(serving_root)
        self.current: LoadedModel | None = None
        self._recorder = recorder
        self._prewarm = prewarm
        self._debounce = debounce_seconds
        self._listeners: list[Callable[[LoadedModel], None]] = []
        self._pending: dict[Path, float] = {}
        self._wake = threading.Condition()
        self._stopping = False
        self._observer: Any = None
        self._worker: threading.Thread | None = None

    def on_swap(self, listener: Callable[[LoadedModel], None]) -> None:
        """Call `listener(model)` after each swap (health status, metrics)."""
        self._listeners.append(listener)
        if self.current is not None:
            listener(self.current)

    def load_latest(self) -> LoadedModel | None:
        """At startup: serve the valid version with the latest published_at."""
        self.serving_root.mkdir(parents=True, exist_ok=True)
        for version, _spec in reversed(published_versions(self.serving_root)):
            if self.consider(self.serving_root / version, reason="startup"):
                break
        if self.current is None:
            log.warning("no valid model under %s yet; waiting for one", self.serving_root)
        return self.current

    def consider(self, model_dir: Path, reason: str = "reload") -> bool:
        """Load and check `model_dir`; swap it in if it is newer than the served one."""
        if not model_dir.is_dir():
            return False
        serving = self.current
        try:
            model = load_model(model_dir, self._prewarm)
        except ModelRejected as err:
            self._reject(model_dir, str(err))
            return False
        if serving is not None and model.published_at <= serving.published_at:
            log.info("model %s at %s is not newer than the served %s; ignored",
                     model.version, model_dir, serving.version)  # fmt: skip
            return False
        self.current = model
        metrics.RELOADS.labels(outcome="swapped").inc()
        metrics.set_model_version(model.version)
        log.info("now serving model %s from %s (%s; was %s)", model.version, model_dir, reason,
                 serving.version if serving else "none")  # fmt: skip
        if self._recorder is not None:
            self._recorder.reload(serving, model, reason)
        for listener in self._listeners:
            listener(model)
        return True

    def _reject(self, model_dir: Path, problem: str) -> None:
        serving = self.current.version if self.current else None
        metrics.RELOADS.labels(outcome="rejected").inc()
        log.error("model rejected: %s: %s; still serving %s", model_dir, problem, serving)
        if self._recorder is not None:
            self._recorder.reload_rejected(model_dir, problem, serving)

    def start_watching(self) -> None:
        """Watch serving_root for new versions; each is handled on a worker thread."""
        self.serving_root.mkdir(parents=True, exist_ok=True)
        self._worker = threading.Thread(target=self._drain, name="model-reload", daemon=True)
        self._worker.start()
        self._observer = Observer()
        self._observer.schedule(_Handler(self), str(self.serving_root), recursive=True)
        self._observer.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._worker is not None:
            self._worker.join(timeout=5)

    def schedule(self, path: str) -> None:
        """Note an event under serving_root; the version directory is checked once quiet."""
        try:
            parts = Path(path).relative_to(self.serving_root).parts
        except ValueError:
            return
        if not parts or parts[0].startswith("."):
            return
        with self._wake:
            self._pending[self.serving_root / parts[0]] = time.monotonic() + self._debounce
            self._wake.notify_all()

    def _drain(self) -> None:
        """Worker loop: consider each version directory once its events have settled."""
        while True:
            with self._wake:
                while not self._stopping:
                    now = time.monotonic()
                    due = [p for p, t in self._pending.items() if t <= now]
                    if due:
                        break
                    wait = min(self._pending.values(), default=now + 1.0) - now
                    self._wake.wait(timeout=max(wait, 0.005))
                if self._stopping:
                    return
                for p in due:
                    del self._pending[p]
            for p in due:
                try:
                    self.consider(p)
                except Exception:  # a bug here must not stop future reloads
                    log.exception("unexpected error while considering %s", p)


class _Handler(FileSystemEventHandler):
    def __init__(self, store: ModelStore):
        self._store = store

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type == "moved":
            self._store.schedule(event.dest_path)
        elif event.event_type in ("created", "modified", "closed"):
            self._store.schedule(event.src_path)
