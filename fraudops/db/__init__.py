"""The database: connections, the schema's migrations, databases made and dropped (tests,
the demo). Every process (scoring, pipeline stages, scheduled jobs, console, Stripe) reaches
Postgres through `connect`, so the defaults are set once; the tables of every part are the
migrations of this package, so one runner orders them all. The writer of `audit_log` is
`fraudops.db.audit`.

Migrations are the files `migrations/NNN_name.sql` beside this module, applied in order,
each in its own transaction together with its row in `schema_migrations` (keyed by the file
name without `.sql`), so a failed migration leaves nothing half-applied and re-running
`migrate` applies only what is new.

CLI: `python -m fraudops.db migrate [--database-url URL]`
     `python -m fraudops.db create-database NAME [--database-url URL]`
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# Serialises concurrent `migrate` calls (several services starting at once).
_MIGRATION_LOCK_ID = 0x6672_6175_6401


def connect(url: str, **kwargs: Any) -> psycopg2.extensions.connection:
    """A psycopg2 connection with the project's defaults (a bounded wait for the server, and
    the name pg_stat_activity shows); keyword arguments override them. An empty URL is
    refused: libpq would otherwise quietly try a local server."""
    if not url:
        raise ValueError("no database URL: set DATABASE_URL")
    kwargs.setdefault("connect_timeout", 10)
    kwargs.setdefault("application_name", "fraudops")
    return psycopg2.connect(url, **kwargs)


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
