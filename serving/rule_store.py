"""The served rule set and its hot swap, like the model's (serving/model_store.py).

`RuleStore.current` is one reference to an immutable, checked `fraudops.rules.RuleSet`; the
scoring core reads it once per batch, so no batch mixes two versions. A thread polls two
numbers in Postgres (the latest rule set version, the latest list change) every
`rules_poll_seconds`; when either moved, it builds the new set off the request path (the
rules compiled and checked as a whole, the changed lists copied with their changes applied)
and swaps the reference in one assignment. A set that fails its checks is logged and
counted, and the old one keeps serving: a broken rule set is never half-applied."""

from __future__ import annotations

import logging
import threading

import psycopg2

from fraudops import rule_sets
from fraudops.db import connect
from fraudops.rules import EMPTY, ListIndex, RuleError, RuleSet
from fraudops.settings import Settings
from serving import metrics
from serving.scoring import RuleSource

log = logging.getLogger(__name__)


class RuleStore(RuleSource):
    def __init__(self, database_url: str, poll_seconds: float = 0.25,
                 hash_key: str | None = None):  # fmt: skip
        super().__init__(EMPTY)
        self._url = database_url
        self._hash_key = hash_key  # IP lists' hashed addresses: FRAUDOPS_IP_HASH_KEY
        self._poll = poll_seconds
        self._seen: tuple[int, int] = (-1, -1)
        self._lists: dict[str, ListIndex] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RuleStore | None:
        """The store a scoring process serves from; None without a database."""
        url = settings.database_url
        return cls(url, settings.rules_poll_seconds, settings.ip_hash_key) if url else None

    def refresh(self) -> bool:
        """Load what changed since the last look; True when a new set was swapped in."""
        conn = connect(self._url, application_name="fraudops-rules")
        try:
            conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with conn, conn.cursor() as cur:
                return self._refresh(cur)
        finally:
            conn.close()

    def _refresh(self, cur) -> bool:
        version, seq = rule_sets.versions(cur)
        if (version, seq) == self._seen:
            return False
        if self._seen[1] < 0:
            seq, lists = rule_sets.load_lists(cur, self._hash_key)
        else:
            seq, lists = rule_sets.apply_changes(cur, self._seen[1], self._lists, self._hash_key)
        version, rules = rule_sets.served_rules(cur)
        try:
            new = RuleSet(f"{version}.{seq}", rules, lists)
        except RuleError as err:
            metrics.RULE_RELOADS.labels(outcome="rejected").inc()
            log.error("rule set %s.%s rejected (%s); still serving %s", version, seq, err,
                      self.current.version)  # fmt: skip
            self._lists, self._seen = lists, (version, seq)
            return False
        self._lists, self._seen = lists, (version, seq)
        self.current = new
        metrics.RULE_RELOADS.labels(outcome="swapped").inc()
        log.info("now serving rule set %s (%d rules)", new.version, len(new))
        return True

    def start(self) -> None:
        """Load now (the database away: the model alone decides until it is back), then poll
        on a thread of its own."""
        try:
            self.refresh()
        except psycopg2.Error as err:
            log.error("no rule set loaded yet (%s); polling", str(err).strip())
        self._thread = threading.Thread(target=self._run, name="rule-reload", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._poll):
            try:
                self.refresh()
            except psycopg2.Error as err:  # the database away: keep serving what we have
                log.warning("rule set not refreshed: %s", str(err).strip())
            except Exception:  # a bug here must not stop future reloads
                log.exception("unexpected error while refreshing the rule set")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
