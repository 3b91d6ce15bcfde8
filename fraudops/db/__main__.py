"""`python -m fraudops.db migrate|create-database`: the schema of a database brought up to
date (the dev stack and the compose file run it before the services start)."""

from __future__ import annotations

import argparse
import logging

import psycopg2

from fraudops.db import create_database, migrate
from fraudops.pii import configure_logging
from fraudops.settings import load_settings

log = logging.getLogger("fraudops.db")


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database-url", help="default: DATABASE_URL from the environment")
    parser = argparse.ArgumentParser(prog="python -m fraudops.db", description="Postgres schema")
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


raise SystemExit(main())
