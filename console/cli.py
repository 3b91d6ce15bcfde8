"""`fraudops-console`: serve the console, or manage its local accounts.

fraudops-console serve                      # uvicorn on FRAUDOPS_CONSOLE_HOST:PORT
fraudops-console users add NAME --role analyst   # password prompted (or one stdin line)
fraudops-console users list
fraudops-console openapi > console/web/src/lib/api-schema.json  # the frontend types source
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys

from console import auth
from fraudops.db import connect
from fraudops.pii import configure_logging
from fraudops.settings import comma_list, load_settings

log = logging.getLogger(__name__)


def read_password() -> str:
    """Prompted twice on a terminal; from a script, the first line of stdin."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass("password: ")
    if getpass.getpass("again: ") != password:
        raise auth.AccountError("password: the two entries differ")
    return password


def users(args: argparse.Namespace, database_url: str) -> int:
    conn = connect(database_url, application_name="fraudops-console")
    try:
        if args.action == "list":
            with conn, conn.cursor() as cur:
                cur.execute("SELECT name, role, disabled FROM console_users ORDER BY name")
                for name, role, disabled in cur.fetchall():
                    print("\t".join([name, role] + (["disabled"] if disabled else [])))
            return 0
        auth.add_user(conn, args.name, args.role, read_password())
        log.info("account %s (%s) saved", args.name, args.role)
        return 0
    except auth.AccountError as err:
        log.error("account refused: %s", err)
        return 2
    finally:
        conn.close()


def serve(settings) -> int:
    import uvicorn

    from console.app import create_app

    app = create_app(settings)
    # Forwarded headers only from the configured proxies (uvicorn's default would trust any
    # local client): behind one, X-Forwarded-Proto makes the cookies Secure. No log_config:
    # uvicorn's loggers (access lines hold search terms) go through the root's PII-masking
    # handler.
    proxies = comma_list(settings.console_trusted_proxies)
    uvicorn.run(app, host=settings.console_host, port=settings.console_port,
                proxy_headers=bool(proxies), forwarded_allow_ips=proxies, log_config=None,
                log_level=settings.log_level.lower())  # fmt: skip
    return 0


def openapi(settings) -> int:
    """The API's OpenAPI schema on stdout. The console does not serve it (it would map the
    API for anyone); the frontend's types are generated from this output and CI checks it."""
    import json

    from console.app import create_app

    print(json.dumps(create_app(settings).openapi(), indent=2, sort_keys=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fraudops-console", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve the console (the default)")
    accounts = commands.add_parser("users", help="local accounts")
    actions = accounts.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="create an account or reset its role and password")
    add.add_argument("name")
    add.add_argument("--role", choices=auth.ROLES, required=True)
    actions.add_parser("list", help="list the accounts")
    commands.add_parser("openapi", help="print the API's OpenAPI schema (JSON)")
    args = parser.parse_args(argv)
    settings = load_settings().with_local_services()
    configure_logging(settings.log_level)
    if args.command == "openapi":
        return openapi(settings)
    if args.command == "users":
        return users(args, settings.database_url)
    return serve(settings)
