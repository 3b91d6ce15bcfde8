"""Should the model be retrained because analysts have said enough since the last run?

The `fraud_label_watch` DAG calls `check_new_labels` every few minutes. It counts labels
given after a watermark: the later of the newest label the served model was trained on
(`labels.window_end` in its model.json) and the newest label the last emitted asset event
already announced. At `label_watch.min_new_labels` or more, the DAG emits the Airflow asset
`fraudops://feedback/labels` with this module's summary as the event's extra, and the
training DAG, scheduled on that asset, starts: the Airflow UI shows the event that caused it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fraudops.db import connect
from fraudops.modelspec import published_versions

log = logging.getLogger("fraudops.label_watch")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


_COUNT = """
SELECT count(*), min(labelled_at), max(labelled_at)
  FROM feedback_labels
 WHERE labelled_at > %s
"""


@dataclass(frozen=True)
class NewLabels:
    """Labels given after `since`: the asset event's extra when there are enough."""

    count: int
    since: str | None
    window_start: str | None
    window_end: str | None
    min_new_labels: int

    @property
    def enough(self) -> bool:
        return self.count >= self.min_new_labels


def _parse(ts: str | None) -> datetime | None:
    return datetime.fromisoformat(ts) if ts else None


def trained_until(serving_root: Path) -> datetime | None:
    """The newest label the newest published model learned from, if it learned from any."""
    versions = published_versions(serving_root) if Path(serving_root).is_dir() else []
    if not versions:
        return None
    labels = versions[-1][1].get("labels") or {}
    return _parse(labels.get("window_end"))


def watermark(serving_root: Path, last_event_extra: dict[str, Any] | None) -> datetime | None:
    """The later of the served model's label window end and the last announced window end."""
    candidates = [trained_until(serving_root)]
    if last_event_extra:
        candidates.append(_parse(last_event_extra.get("window_end")))
    known = [c for c in candidates if c is not None]
    return max(known) if known else None


def count_new_labels(database_url: str, since: datetime | None, min_new_labels: int) -> NewLabels:
    """Count labels given after `since` (every label when there is no watermark yet)."""
    conn = connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(_COUNT, (since or EPOCH,))
            count, first, last = cur.fetchone()
    finally:
        conn.close()
    return NewLabels(
        count=count,
        since=since.isoformat() if since else None,
        window_start=first.isoformat() if first else None,
        window_end=last.isoformat() if last else None,
        min_new_labels=min_new_labels,
    )


def check_new_labels(
    database_url: str | None,
    serving_root: Path,
    last_event_extra: dict[str, Any] | None,
    min_new_labels: int,
) -> dict[str, Any] | None:
    """The asset event's extra when enough new labels arrived, else None."""
    if not database_url:
        log.warning("DATABASE_URL is not set: no labels to watch")
        return None
    since = watermark(serving_root, last_event_extra)
    found = count_new_labels(database_url, since, min_new_labels)
    log.info("%d new labels since %s (need %d)", found.count, found.since, min_new_labels)
    return asdict(found) if found.enough else None
