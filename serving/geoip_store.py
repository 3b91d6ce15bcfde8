"""The IP country database a scoring process enriches with, swapped like a model.

`GeoIpStore.current` is one reference to an opened `GeoIpDatabase` (None: no file, every
address unknown); `GeoIpStore.located` one reference to the enrichment of an address by it
with the keyed hash, remembered per address: traffic repeats addresses, so a repeat costs
one cache hit. The directory holding the file is watched with watchdog; when the file is
replaced (the install step renames a checked file into place: a *moved* event whose
destination is the file), the new file is opened and checked on the watcher's thread and
swapped in, `located` with it. A batch reads `located` once, so no request
fails or waits on a swap; a file that fails its check is logged and the old database keeps
answering."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from fraudops.geoip import LOOKUP_CACHE, UNKNOWN, GeoIpDatabase, IpInfo, keyed_hash

log = logging.getLogger(__name__)


class GeoIpStore:
    """Holds the database; loads, checks and swaps a replaced file off the request path."""

    def __init__(
        self, path: Path | None, hash_key: str | None = None, debounce_seconds: float = 0.15
    ):
        self.path = Path(path).absolute() if path is not None else None
        self.hash_key = hash_key  # of the addresses' keyed hash; None: no hash kept
        self.current: GeoIpDatabase | None = None
        self.located = _located(None, hash_key)
        self._debounce = debounce_seconds
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._observer = None

    def load(self) -> bool:
        """Open, check and swap in the file at `path`; False (and the old database kept)
        when it is missing or fails its check."""
        if self.path is None or not self.path.exists():
            log.warning("no IP country database at %s: every IP address is unknown", self.path)
            return False
        try:
            database = GeoIpDatabase(self.path)
            database.check()
        except Exception as err:  # a bad file must never take the serving one down
            log.error("IP country database rejected: %s; keeping %s", err, self.version)
            return False
        # The old database is not closed: a request may be inside a lookup on it; it is freed
        # once nothing refers to it.
        self.current = database
        self.located = _located(database, self.hash_key)
        log.info("IP country database: %s", database.version.label)
        return True

    @property
    def version(self) -> str:
        return self.current.version.label if self.current is not None else "none"

    def start_watching(self) -> None:
        """Load now, then watch the file's directory for a replacement."""
        self.load()
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._observer = Observer()
        self._observer.schedule(_Handler(self), str(self.path.parent), recursive=False)
        self._observer.start()

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()

    def changed(self, path: str) -> None:
        """An event on `path`: reload once the directory has been quiet for the debounce."""
        if self.path is None or Path(path).absolute() != self.path:
            return
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self._debounce, self.load)
            self._timer.daemon = True
            self._timer.start()


def _located(
    database: GeoIpDatabase | None, hash_key: str | None
) -> Callable[[str], tuple[IpInfo, str]] | None:
    """The enrichment of a non-empty address by `database` (None: unknown) and its keyed
    hash ("" without a key), cached together for this database; None when there is
    neither (every address unknown, nothing to hash)."""
    if database is None and not hash_key:
        return None
    # The uncached functions beneath the lookup's and the hash's own caches: this cache
    # stands for both, so a new address is remembered once, not three times.
    lookup = database.lookup.__wrapped__ if database is not None else lambda ip: UNKNOWN
    hashed = keyed_hash(hash_key) if hash_key else lambda ip: ""

    @functools.lru_cache(maxsize=LOOKUP_CACHE)
    def located(ip: str) -> tuple[IpInfo, str]:
        return lookup(ip), hashed(ip)

    return located


class _Handler(FileSystemEventHandler):
    def __init__(self, store: GeoIpStore):
        self._store = store

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type == "moved":
            self._store.changed(str(event.dest_path))
        elif event.event_type in ("created", "closed"):
            self._store.changed(str(event.src_path))
