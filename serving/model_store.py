"""The served model and its hot reload.

`ModelStore.current` is one reference to an immutable `LoadedModel`; a reload builds and
checks the new model on the watcher's thread (`fraudops.runner.load_model`, the one checked
loader), then replaces the reference in one assignment. A request reads the reference once
and uses that model to the end, so a swap never fails, blocks or mixes two models inside one
request.

models/serving/ is watched with watchdog. `fraudops.modelspec.publish` renames a finished
directory into place, which inotify reports as a *moved* event whose destination is the
new version; a directory copied in by hand arrives as created/modified events. Both are
debounced, hidden names (`.tmp-*`) are ignored, and a model that fails its checks is
rejected with a log line and an audit row while the old one keeps serving."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from fraudops.modelspec import published_versions
from fraudops.runner import LoadedModel, ModelRejected, load_model
from serving import metrics

__all__ = ["LoadedModel", "ModelRejected", "ModelStore", "load_model"]

log = logging.getLogger(__name__)


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
