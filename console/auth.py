"""Local accounts and sessions of the analyst console.

Passwords are stored as argon2id hashes; a session is a random cookie value whose SHA-256
is the row key, so the sessions table opens no session if it leaks. Each session carries
its own CSRF token: the browser gets it in a readable cookie and sends it back in the
`X-CSRF-Token` header on every write (double submit), which a cross-site page can neither
read nor forge. Failed sign-ins are counted per (account, client address) pair in
Postgres, so the limit holds across worker processes and restarts: each failure doubles the
wait before that pair may try again, and enough of them lock that pair alone. Nobody can lock
an analyst out by guessing from elsewhere; the right password from another client works.
A client is also limited over all the accounts it tries.

The web layer asks for the signed-in user through one dependency (`console.app`'s
`current_user`); single sign-on later is another way of producing the same `User`."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

ROLES: tuple[str, ...] = ("viewer", "analyst", "admin")
# What each role may do beyond reading (a role includes the ones before it).
WRITE_ROLES = {
    "label": ("analyst", "admin"),
    "claim": ("analyst", "admin"),
    "rollback": ("admin",),
    "edit_rules": ("analyst", "admin"),  # rules and lists
}
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
MIN_PASSWORD_LENGTH = 12
SESSION_COOKIE = "fraudops_session"
CSRF_COOKIE = "fraudops_csrf"
CSRF_HEADER = "X-CSRF-Token"

_hasher = PasswordHasher()
# Verified against when the account does not exist, so timing does not reveal names.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


class AccountError(ValueError):
    """An account cannot be created as asked; the message names the field."""


@dataclass(frozen=True)
class User:
    name: str
    role: str

    def may(self, action: str) -> bool:
        return self.role in WRITE_ROLES[action]

    @property
    def label_source(self) -> str:
        """The `source` of a label this user gives: never a field the browser sends."""
        return f"analyst:{self.name}"


@dataclass(frozen=True)
class Session:
    user: User
    csrf_token: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_account(name: str, role: str, password: str) -> None:
    if not NAME_PATTERN.match(name):
        raise AccountError("name: 1-32 of a-z 0-9 _ . -, starting with a letter or digit")
    if role not in ROLES:
        raise AccountError(f"role: must be one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"password: at least {MIN_PASSWORD_LENGTH} characters")


def add_user(conn, name: str, role: str, password: str) -> None:
    """Create an account, or reset an existing one's role and password."""
    check_account(name, role, password)
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO console_users (name, role, password_hash) VALUES (%s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET role = EXCLUDED.role,"
            " password_hash = EXCLUDED.password_hash, disabled = false",
            (name, role, _hasher.hash(password)),
        )
        # A new password ends the sessions opened with the old one.
        cur.execute("DELETE FROM console_sessions WHERE user_name = %s", (name,))


def verify_password(conn, name: str, password: str) -> User | None:
    """The user if the password is theirs and the account is enabled."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT role, password_hash FROM console_users WHERE name = %s AND NOT disabled",
            (name,),
        )
        row = cur.fetchone()
    stored = row[1] if row else _DUMMY_HASH
    try:
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    return User(name, row[0]) if row else None


@dataclass(frozen=True)
class Failures:
    """Failed sign-ins from one client within the window."""

    pair: int  # for this account
    since_last_s: float  # since the pair's latest failure (0 when there is none)
    client: int  # for any account


@dataclass(frozen=True)
class Throttle:
    """How failures slow a pair: the first wait, doubling per failure, and the lock."""

    first_delay_s: float
    max_failures: int  # per pair: then locked until failures leave the window
    max_client_failures: int  # per client, over all accounts
    window_s: int

    def wait_s(self, failures: Failures) -> float:
        """Seconds before this pair may try again; 0 when it may now."""
        if failures.client >= self.max_client_failures or failures.pair >= self.max_failures:
            return max(1.0, self.window_s - failures.since_last_s)
        if failures.pair == 0:
            return 0.0
        delay = self.first_delay_s * 2 ** (failures.pair - 1)
        return max(0.0, delay - failures.since_last_s)


def recent_failures(conn, name: str, client: str, window_s: int) -> Failures:
    """Failed sign-ins from `client` in the window."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FILTER (WHERE user_name = %s),"
            " coalesce(extract(epoch FROM now() - max(at) FILTER (WHERE user_name = %s)), 0),"
            " count(*) FROM console_login_failures"
            " WHERE client = %s AND at > now() - make_interval(secs => %s)",
            (name[:64], name[:64], client[:64], window_s),
        )
        pair, since_last, by_client = cur.fetchone()
    return Failures(pair, float(since_last), by_client)


def record_failure(conn, name: str, client: str) -> None:
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO console_login_failures (user_name, client) VALUES (%s, %s)",
            (name[:64], client[:64]),
        )


def open_session(conn, user: User, ttl_s: int) -> tuple[str, str]:
    """A new session for `user`: (cookie token, CSRF token)."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM console_sessions WHERE expires_at < now()")
        cur.execute(
            "INSERT INTO console_sessions (token_hash, user_name, csrf_token, expires_at)"
            " VALUES (%s, %s, %s, now() + make_interval(secs => %s))",
            (token_hash(token), user.name, csrf, ttl_s),
        )
    return token, csrf


def find_session(conn, token: str) -> Session | None:
    """The live session of a cookie value, if any (expired ones count as none)."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT u.name, u.role, s.csrf_token FROM console_sessions s"
            " JOIN console_users u ON u.name = s.user_name"
            " WHERE s.token_hash = %s AND s.expires_at > now() AND NOT u.disabled",
            (token_hash(token),),
        )
        row = cur.fetchone()
    return Session(User(row[0], row[1]), row[2]) if row else None


def close_session(conn, token: str) -> None:
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM console_sessions WHERE token_hash = %s", (token_hash(token),))


def csrf_matches(session: Session, header: str | None, cookie: str | None) -> bool:
    """The header must repeat the cookie, and both must be this session's token."""
    if not header or not cookie:
        return False
    return secrets.compare_digest(header, cookie) and secrets.compare_digest(
        header, session.csrf_token
    )
