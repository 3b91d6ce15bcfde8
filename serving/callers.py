"""Who may call the gRPC server, and which label sources each caller may write.

A caller is a row of `api_callers` (fraudops/db/migrations/007_callers.sql): a name, scopes
(ingest: SendTransaction; score: Score, ScoreBatch; label: SubmitLabel) and glob patterns of
the label sources it may write (`stripe:*`, `chargeback:*`). It proves who it is with a
bearer token in the call's `authorization` metadata, or, when the server runs mutual TLS,
with a client certificate whose common name is its name. A token is shown once, when it is
issued; the table keeps only its SHA-256 (a token has 256 random bits, so a plain hash is
enough). A token is found by its hash in a dict: what a timing difference could reveal is
about the hash, which an attacker cannot steer toward a stored one, never about a token.

`analyst:<name>` (serving.labels.RESERVED_SOURCE) is the source of a label given in the
console by its signed-in user. The
console writes its labels straight to Postgres, so that source is never accepted through
gRPC or Kafka, whatever a caller's record says (`RESERVED_SOURCE`).

Authentication sits on the inline path, so it never waits on Postgres: each server process
keeps the callers in memory (`CallerDirectory`), reloaded every `caller_refresh_s` seconds.
A revoked token, or a newly issued one, takes effect within that interval while Postgres
answers; if a reload fails the last loaded callers stay in force, and it is logged.

CLI `fraudops-clients`:
    fraudops-clients add NAME --scopes ingest,score [--sources 'stripe:*,chargeback:*']
    fraudops-clients list
    fraudops-clients revoke NAME
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import logging
import re
import secrets
import sys
import threading
from dataclasses import dataclass

import grpc

from fraudops.db import connect
from fraudops.db.audit import append_audit
from fraudops.pii import configure_logging
from fraudops.settings import Settings, comma_list, env_name, load_settings
from serving.labels import RESERVED_SOURCE, source_refusal

log = logging.getLogger(__name__)

SCOPES: tuple[str, ...] = ("ingest", "score", "label")
METHOD_SCOPES = {"SendTransaction": "ingest", "Score": "score", "ScoreBatch": "score",
                 "SubmitLabel": "label"}  # fmt: skip
# Methods an operator may open to anonymous callers: never one that writes a label.
ANONYMOUS_ALLOWED = frozenset(m for m, s in METHOD_SCOPES.items() if s != "label")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
TOKEN_PREFIX = "fo_"
AUTH_HEADER = "authorization"
NO_CREDENTIALS = "no credentials: send 'authorization: Bearer <token>' metadata"


class CallerError(ValueError):
    """A caller cannot be created as asked; the message names the field."""


class Refused(Exception):
    """A call whose caller is unknown (UNAUTHENTICATED) or may not do what it asks
    (PERMISSION_DENIED); the message names what is missing."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Caller:
    name: str
    scopes: frozenset[str]
    sources: tuple[str, ...] = ()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def check_source(caller: Caller, source: str) -> None:
    """Raise Refused (PERMISSION_DENIED) unless `caller` may write a label from `source`."""
    reason = source_refusal(caller.sources, source, f"caller {caller.name!r}")
    if reason is not None:
        raise Refused(grpc.StatusCode.PERMISSION_DENIED, reason)


def check_caller(name: str, scopes: list[str], sources: list[str]) -> None:
    if not NAME_PATTERN.match(name):
        raise CallerError("name: 1-64 of a-z 0-9 _ . -, starting with a letter or digit")
    if not scopes or any(s not in SCOPES for s in scopes):
        raise CallerError(f"scopes: one or more of {', '.join(SCOPES)}, got {scopes}")
    for pattern in sources:
        if pattern.startswith(RESERVED_SOURCE[:-1]) or fnmatch.fnmatchcase("analyst:x", pattern):
            raise CallerError(f"sources: {pattern!r} would cover analyst:<name>, the console's")
    if sources and "label" not in scopes:
        raise CallerError("sources: only a caller with the label scope writes labels")


def add_caller(conn, name: str, scopes: list[str], sources: list[str]) -> str:
    """Create a caller (or replace one of that name: new token, scopes and sources, no longer
    revoked); returns its token, which nothing stores."""
    check_caller(name, scopes, sources)
    token = new_token()
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO api_callers (name, token_hash, scopes, sources) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET token_hash = EXCLUDED.token_hash,"
            " scopes = EXCLUDED.scopes, sources = EXCLUDED.sources, created_at = now(),"
            " revoked_at = NULL RETURNING (xmax <> 0)",
            (name, token_hash(token), scopes, sources),
        )
        (replaced,) = cur.fetchone()
        detail = {"scopes": scopes, "sources": sources, "replaced": replaced}
        append_audit(cur, "caller_added", name, detail)
    return token


def revoke_caller(conn, name: str) -> bool:
    """Revoke a caller's token; False if there is no such caller, or it was revoked already."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE api_callers SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL"
            " RETURNING name",
            (name,),
        )
        if cur.fetchone() is None:
            return False
        append_audit(cur, "caller_revoked", name, {})
    return True


def list_callers(conn) -> list[tuple]:
    """(name, scopes, sources, created_at, revoked_at) of every caller, by name."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT name, scopes, sources, created_at, revoked_at FROM api_callers ORDER BY name"
        )
        return cur.fetchall()


def load_callers(conn) -> dict[str, tuple[str, Caller]]:
    """The callers not revoked: name -> (token hash, caller)."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT name, token_hash, scopes, sources FROM api_callers WHERE revoked_at IS NULL"
        )
        rows = cur.fetchall()
    return {n: (h, Caller(n, frozenset(sc), tuple(so))) for n, h, sc, so in rows}


class CallerDirectory:
    """The callers of one process, in memory, reloaded from Postgres in the background."""

    def __init__(self, database_url: str | None, refresh_s: float):
        self._url = database_url
        self._refresh_s = refresh_s
        self._by_hash: dict[str, Caller] = {}
        self._by_name: dict[str, Caller] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def by_token(self, token: str) -> Caller | None:
        return self._by_hash.get(token_hash(token))

    def by_name(self, name: str) -> Caller | None:
        return self._by_name.get(name)

    def reload(self) -> None:
        conn = connect(self._url, application_name="fraudops-callers")
        try:
            loaded = load_callers(conn)
        finally:
            conn.close()
        # Two whole dicts swapped in: a lookup never sees half a reload.
        self._by_hash = {h: c for h, c in loaded.values()}
        self._by_name = {n: c for n, (_, c) in loaded.items()}

    def _run(self) -> None:
        while not self._stop.wait(self._refresh_s):
            try:
                self.reload()
            except Exception as err:  # noqa: BLE001 - the last callers loaded stay in force
                log.warning("callers not reloaded (the last %d loaded stay): %s",
                            len(self._by_name), err)  # fmt: skip

    def start(self) -> None:
        """Load once (a failure here stops the server: it would refuse everyone), then keep
        reloading; without a database there are no callers, only anonymous methods."""
        if not self._url:
            return
        self.reload()
        self._thread = threading.Thread(target=self._run, name="callers", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def anonymous_methods(settings: Settings) -> frozenset[str]:
    """The methods the operator opened to callers without credentials; an error names the
    variable when it lists a method that writes labels or does not exist."""
    methods = frozenset(comma_list(settings.grpc_anonymous_methods))
    if wrong := sorted(methods - ANONYMOUS_ALLOWED):
        raise ValueError(
            f"{env_name('grpc_anonymous_methods')}: {', '.join(wrong)} cannot be anonymous "
            f"(only {', '.join(sorted(ANONYMOUS_ALLOWED))} may be)"
        )
    return methods


class Gate:
    """The check every fraud.v1 call passes before its handler runs."""

    def __init__(self, directory: CallerDirectory, anonymous: frozenset[str], mtls: bool):
        self.directory = directory
        self._anonymous = {m: Caller("anonymous", frozenset([METHOD_SCOPES[m]])) for m in anonymous}
        self._mtls = mtls

    def _by_certificate(self, context: grpc.ServicerContext) -> Caller | None:
        names = context.auth_context().get("x509_common_name")
        if not names:
            return None
        name = names[0].decode(errors="replace")
        caller = self.directory.by_name(name)
        if caller is None:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED,
                          f"client certificate: CN={name!r} is not a known caller")  # fmt: skip
        return caller

    def _identify(self, context: grpc.ServicerContext) -> Caller | None:
        for key, value in context.invocation_metadata():
            if key != AUTH_HEADER:
                continue
            scheme, _, token = value.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Refused(grpc.StatusCode.UNAUTHENTICATED,
                              "authorization: expected 'Bearer <token>'")  # fmt: skip
            caller = self.directory.by_token(token.strip())
            if caller is None:
                raise Refused(grpc.StatusCode.UNAUTHENTICATED,
                              "authorization: unknown or revoked token")  # fmt: skip
            return caller
        return self._by_certificate(context) if self._mtls else None

    def admit(self, context: grpc.ServicerContext, method: str) -> Caller:
        """The caller of this call if it may call `method`; raise Refused otherwise."""
        caller = self._identify(context)
        if caller is None:
            if method in self._anonymous:
                return self._anonymous[method]
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, NO_CREDENTIALS)
        scope = METHOD_SCOPES[method]
        if scope not in caller.scopes:
            raise Refused(grpc.StatusCode.PERMISSION_DENIED,
                          f"caller {caller.name!r} lacks scope {scope!r} for {method}")  # fmt: skip
        return caller


def _print_callers(conn) -> None:
    for name, scopes, sources, created, revoked in list_callers(conn):
        state = f"revoked {revoked:%Y-%m-%d %H:%M}" if revoked else "active"
        print("\t".join([name, ",".join(scopes), ",".join(sources) or "-",
                         f"created {created:%Y-%m-%d %H:%M}", state]))  # fmt: skip


def run_command(args: argparse.Namespace, database_url: str) -> int:
    conn = connect(database_url, application_name="fraudops-clients")
    try:
        if args.action == "list":
            _print_callers(conn)
            return 0
        if args.action == "revoke":
            if not revoke_caller(conn, args.name):
                log.error("no active caller named %r", args.name)
                return 1
            log.info("caller %s revoked", args.name)
            return 0
        token = add_caller(conn, args.name, comma_list(args.scopes), comma_list(args.sources))
        print(token)  # stdout holds only the token, so a script can capture it
        log.info("caller %s saved; its token is shown once, above", args.name)
        return 0
    except CallerError as err:
        log.error("caller refused: %s", err)
        return 2
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fraudops-clients",
                                     description="callers of the gRPC server")  # fmt: skip
    parser.add_argument("--database-url", help="default: DATABASE_URL (or the dev stack's)")
    actions = parser.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="issue a token (replacing any of that name)")
    add.add_argument("name")
    add.add_argument("--scopes", required=True, help=f"comma-separated: {', '.join(SCOPES)}")
    add.add_argument("--sources", default="", help="label source globs, e.g. 'chargeback:*'")
    actions.add_parser("list", help="every caller, revoked ones included")
    revoke = actions.add_parser("revoke", help="revoke a caller's token")
    revoke.add_argument("name")
    args = parser.parse_args(argv)
    settings = load_settings().with_local_services()
    configure_logging(settings.log_level)
    return run_command(args, args.database_url or settings.database_url)


if __name__ == "__main__":
    sys.exit(main())
