"""Postgres schema migrations, and databases made and dropped (tests, the demo).

Migrations are the files `serving/migrations/NNN_name.sql`, applied in order, each in its
own transaction together with its row in `schema_migrations`, so a failed migration leaves
nothing half-applied and re-running `migrate` applies only what is new. Connections come
from `fraudops.db.connect`, shared with the pipeline and the jobs.

CLI: `python -m serving.db migrate [--database-url URL]`
     `python -m serving.db create-database NAME [--database-url URL]`
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
from psycopg2 import sql

from fraudops.db import connect
from fraudops.pii import configure_logging
from fraudops.settings import load_settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# Serialises concurrent `migrate` calls (several services starting at once).
_MIGRATION_LOCK_ID = 0x6672_6175_6401


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[tuple[str, Path]]:
    """(version, path) of every migration, in order; a misnamed .sql file is an error,
    since silently skipping it would leave the schema behind."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file name {path.name!r} is not NNN_name.sql")
        found.append((path.stem, path))
    versions = [v[:3] for v, _ in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migrations share a number in {directory}")
    return found


def migrate(url: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the migrations not yet recorded in schema_migrations; returns their versions."""
    applied: list[str] = []
    conn = connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK_ID,))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
        for version, path in migration_files(directory):
            with conn, conn.cursor() as cur:
                cur.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (version,))
                if cur.fetchone():
                    continue
                cur.execute(path.read_text())
                cur.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            log.info("applied migration %s", version)
            applied.append(version)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK_ID,))
    finally:
        conn.close()
    return applied


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at database `name`."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def create_database(url: str, name: str) -> str:
    """Create database `name` on the server of `url` (if missing); returns its URL."""
    conn = connect(with_database(url, "postgres"))
    conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if not cur.fetchone():
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()
    return with_database(url, name)


def drop_database(url: str, name: str) -> None:
    """Drop database `name`, disconnecting whoever still uses it (test teardown)."""
    conn = connect(with_database(url, "postgres"))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            query = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            cur.execute(query.format(sql.Identifier(name)))
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database-url", help="default: DATABASE_URL from the environment")
    parser = argparse.ArgumentParser(prog="python -m serving.db", description="Postgres schema")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", parents=[common], help="apply pending migrations")
    create = commands.add_parser(
        "create-database", parents=[common], help="create a database and migrate it"
    )
    create.add_argument("name")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level)

    url = args.database_url or settings.database_url
    if not url:
        parser.error("no database: pass --database-url or set DATABASE_URL")
    if args.command == "create-database":
        url = create_database(url, args.name)
    try:
        applied = migrate(url)
    except (psycopg2.Error, ValueError) as err:
        log.error("migration failed: %s", err)
        return 1
    log.info("%d migration(s) applied: %s", len(applied), ", ".join(applied) or "none pending")
    return 0


if __name__ == "__main__":
    sys.exit(main())
