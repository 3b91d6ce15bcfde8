"""`fraudops-rollback --to VERSION` (or `--previous`): serve an earlier model again.

A rollback is a publication: the chosen version's directory is re-published with
fraudops.modelspec.publish under its own name with a fresh published_at, so every server
and scorer watching models/serving/ loads it through the same checked hot-reload path as
a promotion. The rollback is recorded in audit_log when a database is configured."""

from __future__ import annotations

import argparse
import logging
import os
import socket
from pathlib import Path

from fraudops.db.audit import append_audit_alone
from fraudops.modelspec import publish, published_versions
from fraudops.pii import configure_logging
from fraudops.settings import load_settings
from serving.model_store import ModelRejected, load_model

log = logging.getLogger(__name__)


class RollbackError(ValueError):
    """The requested version cannot be rolled back to."""


def _loads(model_dir: Path) -> bool:
    try:
        load_model(model_dir, prewarm=0)
    except ModelRejected:
        return False
    return True


def choose_version(serving_root: Path, to: str | None) -> tuple[str, str | None]:
    """(version to publish, version served now). The served one is the latest publication
    that passes its checks (what a restarted server would pick); `to=None` means the
    latest valid publication before it of a different version."""
    published = [v for v, _ in published_versions(serving_root)]
    if not published:
        raise RollbackError(f"no published models under {serving_root}")
    valid = [v for v in reversed(published) if _loads(serving_root / v)]
    current = valid[0] if valid else None
    if to is not None:
        if to not in published:
            raise RollbackError(f"version {to!r} not under {serving_root} (have: {published})")
        return to, current
    earlier = [v for v in valid if v != current]
    if not earlier:
        raise RollbackError(f"no earlier valid version than {current!r} under {serving_root}")
    return earlier[0], current


def rollback(
    serving_root: Path, to: str | None, database_url: str | None, user: str | None = None
) -> Path:
    """Check the target loads, re-publish it, and audit the rollback (by `user`, default
    the OS user: the console passes its signed-in admin)."""
    version, current = choose_version(serving_root, to)
    try:
        load_model(serving_root / version, prewarm=0)
    except ModelRejected as err:
        raise RollbackError(f"version {version!r} fails its checks: {err}") from err
    path = publish(serving_root / version, serving_root, version)
    log.info("rolled back from %s to %s (%s)", current, version, path)
    if database_url:
        detail = {"from": current, "to": version, "path": str(path), "host": socket.gethostname(),
                  "user": user or os.environ.get("USER", "")}  # fmt: skip
        append_audit_alone(database_url, "rollback", version, detail)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="VERSION", help="the version to serve again")
    target.add_argument("--previous", action="store_true", help="the version served before")
    parser.add_argument("--model-dir", type=Path, help="default FRAUDOPS_MODEL_DIR")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level)
    root = args.model_dir or settings.model_dir
    try:
        rollback(root, args.to, settings.database_url)
    except RollbackError as err:
        log.error("rollback refused: %s", err)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
