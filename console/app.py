"""The analyst console's web app: a JSON API under /api and the built frontend.

Every /api route but sign-in depends on `current_user` (401 without a live session) and
every write also on a CSRF check and a role (403); `PUBLIC_ROUTES` is the complete list
of exceptions, and a test holds the app to it. A label goes through
`serving.labels.record_label`, the function behind `Feedback.SubmitLabel`, with the
signed-in user as its source."""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Iterator
from contextlib import asynccontextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from psycopg2.pool import ThreadedConnectionPool
from pydantic import BaseModel, ConfigDict, Field

from console import auth, live, queries, schemas
from console.auth import Session, User
from fraudops.db.audit import append_audit_alone
from fraudops.modelspec import published_versions
from fraudops.rule_sets import hash_addresses_in
from fraudops.schema import TRANSACTION_TYPES
from fraudops.settings import Settings, comma_list
from serving.labels import MAX_NOTE_LENGTH, LabelError, record_label
from serving.rollback import RollbackError, rollback

log = logging.getLogger(__name__)

WEB_DIST = Path(__file__).with_name("web") / "dist"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
PUBLIC_ROUTES = {("POST", "/api/auth/login"), ("GET", "/api/health")}
DIGEST_FILE = r"^[a-z_]{1,40}\.(csv|html)$"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline';"
        " object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
Id = Annotated[str, Field(min_length=1, max_length=128)]
# A label for a transaction never scored: 404; for an item the queue's job has since
# rebuilt away: 409 (the screen reloads the queue); any other broken rule: 422.
LABEL_ERROR_STATUS = {"transaction_id": 404, "queue_date": 409}


# --- database and the signed-in user ------------------------------------------------------


def db(request: Request) -> Iterator[Any]:
    """A pooled connection in autocommit (reads leave no transaction open)."""
    pool: ThreadedConnectionPool = request.app.state.pool
    conn = pool.getconn()
    conn.autocommit = True
    try:
        yield conn
    finally:
        pool.putconn(conn, close=bool(conn.closed))


Db = Annotated[Any, Depends(db)]


def current_session(request: Request, conn: Db) -> Session:
    """The live session of the request's cookie (401 without), CSRF-checked on writes."""
    token = request.cookies.get(auth.SESSION_COOKIE)
    session = auth.find_session(conn, token) if token else None
    if session is None:
        raise HTTPException(401, "sign in first")
    if request.method not in SAFE_METHODS:
        header = request.headers.get(auth.CSRF_HEADER)
        if not auth.csrf_matches(session, header, request.cookies.get(auth.CSRF_COOKIE)):
            raise HTTPException(403, f"missing or wrong {auth.CSRF_HEADER} header")
    return session


def current_user(session: Annotated[Session, Depends(current_session)]) -> User:
    """The one dependency every route uses for who is asking: a single sign-on layer
    would produce the same User from its own token."""
    return session.user


CurrentUser = Annotated[User, Depends(current_user)]


def allowed(user: User, action: str) -> User:
    if not user.may(action):
        raise HTTPException(403, f"role {user.role!r} may not {action}")
    return user


# --- request bodies and query models ------------------------------------------------------


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginBody(Strict):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class LabelBody(Strict):
    label: Literal["FRAUD", "LEGIT"]
    note: str = Field(default="", max_length=MAX_NOTE_LENGTH)
    queue_date: date | None = None  # given from that day's review queue: stored with its reason


class ReviewQueueQuery(Strict):
    day: date | None = None


class RollbackBody(Strict):
    to: str | None = Field(default=None, min_length=1, max_length=64)


Amount = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class QueueQuery(Strict):
    band: list[Literal["CHALLENGE", "BLOCK"]] = []
    type: list[Literal[TRANSACTION_TYPES]] = []  # type: ignore[valid-type]
    amount_min: Amount | None = None
    amount_max: Amount | None = None
    since: datetime | None = None
    until: datetime | None = None
    model_version: str | None = Field(default=None, max_length=64)
    source: Literal["inline", "stream"] | None = None
    labelled: Literal["no", "yes", "any"] = "no"
    q: str | None = Field(default=None, max_length=128)
    sort: Literal["score", "newest"] = "score"
    hide_claimed: bool = False

    def to_filter(self) -> queries.QueueFilter:
        fields = self.model_dump(include=set(QueueQuery.model_fields))
        fields["band"], fields["type"] = tuple(self.band), tuple(self.type)
        fields["q"] = (self.q or "").strip() or None
        return queries.QueueFilter(**fields)


class PageQuery(QueueQuery):
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=256)


# --- the app --------------------------------------------------------------------------------


def create_app(settings: Settings) -> FastAPI:
    """The console for `settings` (its database is required)."""
    if not settings.database_url:
        raise ValueError("the console needs a database: set DATABASE_URL")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.pool = ThreadedConnectionPool(1, 8, settings.database_url,
                                                application_name="fraudops-console")  # fmt: skip
        if settings.ip_hash_key:  # IP list items kept as given before they were hashed
            hash_addresses_in(settings.database_url, settings.ip_hash_key, "fraudops-console")
        try:
            yield
        finally:
            app.state.pool.closeall()

    app = FastAPI(title="fraudops console", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)  # fmt: skip
    app.state.settings = settings

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        if request.method not in SAFE_METHODS and not same_origin(request):
            return JSONResponse({"detail": "cross-origin write refused"}, status_code=403)
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        if request.url.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    add_auth_routes(app, settings)
    add_queue_routes(app, settings)
    add_model_routes(app, settings)
    add_trend_routes(app, settings)
    add_live_routes(app, settings)
    from console.rules_routes import add_rule_routes  # it builds on this module's pieces

    add_rule_routes(app, settings)
    add_frontend(app)
    return app


def same_origin(request: Request) -> bool:
    """A browser names the page a write comes from in Origin; another site's page is
    refused before anything runs (sign-in included, which has no CSRF token yet)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser's cross-site request (curl, scripts, tests)
    return urlsplit(origin).netloc == request.headers.get("host", "")


def client_address(request: Request, trusted: frozenset[str]) -> str:
    """The client's address: the connection's, unless it comes from a trusted proxy; then
    the nearest address in X-Forwarded-For that is not a trusted proxy (what a client
    writes there itself sits further left, and is not believed)."""
    peer = request.client.host if request.client else "unknown"
    if peer not in trusted:
        return peer
    hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",")]
    return next((h for h in reversed(hops) if h and h not in trusted), peer)


def add_auth_routes(app: FastAPI, settings: Settings) -> None:
    @app.get("/api/health")
    def health() -> schemas.Health:
        return {"status": "ok"}

    trusted = frozenset(comma_list(settings.console_trusted_proxies))
    throttle = auth.Throttle(
        settings.console_login_first_delay_s, settings.console_login_max_failures,
        settings.console_login_max_client_failures, settings.console_login_window_s,
    )  # fmt: skip

    @app.post("/api/auth/login")
    def login(body: LoginBody, request: Request, response: Response, conn: Db) -> schemas.SignedIn:
        client = client_address(request, trusted)
        failures = auth.recent_failures(conn, body.name, client, throttle.window_s)
        if wait := throttle.wait_s(failures):
            raise HTTPException(429, "too many failed sign-ins from here: try again later",
                                headers={"Retry-After": str(math.ceil(wait))})  # fmt: skip
        user = auth.verify_password(conn, body.name, body.password)
        if user is None:
            auth.record_failure(conn, body.name, client)
            append_audit_alone(settings.database_url, "login_failed", body.name[:64],
                               {"client": client})  # fmt: skip
            raise HTTPException(401, "wrong name or password")
        token, csrf = auth.open_session(conn, user, settings.console_session_ttl_s)
        append_audit_alone(settings.database_url, "login", user.name, {"client": client})
        # Browser-session cookies: the server's expiry decides how long a session lives.
        secure = request.url.scheme == "https"
        response.set_cookie(auth.SESSION_COOKIE, token, httponly=True, samesite="strict",
                            secure=secure, path="/")  # fmt: skip
        response.set_cookie(auth.CSRF_COOKIE, csrf, httponly=False, samesite="strict",
                            secure=secure, path="/")  # fmt: skip
        return {"name": user.name, "role": user.role}

    @app.post("/api/auth/logout")
    def logout(
        request: Request, response: Response, conn: Db, user: CurrentUser
    ) -> schemas.SignedOut:
        auth.close_session(conn, request.cookies[auth.SESSION_COOKIE])
        response.delete_cookie(auth.SESSION_COOKIE, path="/")
        response.delete_cookie(auth.CSRF_COOKIE, path="/")
        return {"signed_out": user.name}

    @app.get("/api/auth/me")
    def me(user: CurrentUser) -> schemas.Me:
        actions = sorted(a for a in auth.WRITE_ROLES if user.may(a))
        return {"name": user.name, "role": user.role, "may": actions}


def csv_cell(value: Any) -> Any:
    """A value safe for a spreadsheet: text that would start a formula is quoted."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def add_queue_routes(app: FastAPI, settings: Settings) -> None:
    @app.get("/api/queue")
    def queue(
        params: Annotated[PageQuery, Query()], conn: Db, user: CurrentUser
    ) -> schemas.QueuePage:
        try:
            return queries.queue_page(conn, params.to_filter(), params.limit, params.cursor)
        except queries.BadCursor as err:
            raise HTTPException(422, f"cursor: {err}") from err

    @app.get("/api/review-queue")
    def review_queue(
        params: Annotated[ReviewQueueQuery, Query()], conn: Db, user: CurrentUser
    ) -> schemas.ReviewQueuePage:
        return queries.review_queue(conn, params.day)

    @app.get("/api/queue.csv")
    def queue_csv(params: Annotated[QueueQuery, Query()], request: Request, user: CurrentUser):
        pool: ThreadedConnectionPool = request.app.state.pool
        limit = settings.console_export_max_rows

        def lines() -> Iterator[str]:
            # A connection of the stream's own: the request's is given back before the
            # body is sent, and the export reads for as long as the download lasts.
            conn = pool.getconn()
            conn.autocommit = True
            buf = io.StringIO()
            writer = csv.writer(buf)
            try:
                for row in queries.queue_export(conn, params.to_filter(), limit):
                    writer.writerow([csv_cell(v) for v in row])
                    yield buf.getvalue()
                    buf.seek(0)
                    buf.truncate()
            finally:
                pool.putconn(conn, close=bool(conn.closed))

        headers = {"Content-Disposition": 'attachment; filename="queue.csv"'}
        return StreamingResponse(lines(), media_type="text/csv", headers=headers)

    @app.get("/api/transactions/{transaction_id}")
    def transaction(transaction_id: Id, conn: Db, user: CurrentUser) -> schemas.TransactionDetail:
        found = queries.transaction(conn, transaction_id)
        if found is None:
            raise HTTPException(404, "no such scored transaction")
        return found

    @app.post("/api/transactions/{transaction_id}/label")
    def label(transaction_id: Id, body: LabelBody, conn: Db, user: CurrentUser) -> schemas.Labelled:
        allowed(user, "label")
        try:
            result = record_label(conn, transaction_id, body.label, user.label_source,
                                  body.note, body.queue_date)  # fmt: skip
        except LabelError as err:
            raise HTTPException(LABEL_ERROR_STATUS.get(err.field, 422), str(err)) from err
        queries.release(conn, transaction_id, user.name)
        return {"transaction_id": result.transaction_id, "label": result.label,
                "superseded": result.previous, "changed": result.changed,
                "source": user.label_source, "queue_reason": result.queue_reason}  # fmt: skip

    @app.post("/api/transactions/{transaction_id}/claim")
    def claim(transaction_id: Id, conn: Db, user: CurrentUser) -> schemas.Claim:
        allowed(user, "claim")
        try:
            held = queries.claim(conn, transaction_id, user.name, settings.console_claim_ttl_s)
        except LookupError as err:
            raise HTTPException(404, "no such scored transaction") from err
        if held is None:
            raise HTTPException(409, "claimed by another analyst")
        return dict(held)

    @app.delete("/api/transactions/{transaction_id}/claim")
    def release(transaction_id: Id, conn: Db, user: CurrentUser) -> schemas.Released:
        allowed(user, "claim")
        queries.release(conn, transaction_id, user.name)
        return {"released": transaction_id}


def mlflow_run_url(settings: Settings, run_id: str | None) -> str | None:
    return f"{settings.mlflow_tracking_uri.rstrip('/')}/#/runs/{run_id}" if run_id else None


def version_summaries(settings: Settings) -> list[dict[str, Any]]:
    """Each published model's metadata from its model.json, newest publication first."""
    found = []
    for version, spec in reversed(published_versions(settings.model_dir)):
        run_id = spec.get("mlflow_run_id")
        found.append({
            "version": version, "published_at": spec.get("published_at"),
            "mlflow_run_id": run_id, "mlflow_run_url": mlflow_run_url(settings, run_id),
            "data_hash": spec.get("data_hash"), "git_commit": spec.get("git_commit"),
            "thresholds": spec["thresholds"], "metrics": spec["metrics"],
        })  # fmt: skip
    return found


def add_model_routes(app: FastAPI, settings: Settings) -> None:
    @app.get("/api/models")
    def models(conn: Db, user: CurrentUser) -> schemas.Models:
        timeline, events = queries.deployments(conn)
        for row in timeline:
            row["mlflow_run_url"] = mlflow_run_url(settings, row["mlflow_run_id"])
        return {"served": queries.served_version(conn), "deployments": timeline,
                "events": events, "versions": version_summaries(settings),
                "drift": queries.latest_drift(conn)}  # fmt: skip

    @app.post("/api/models/rollback")
    def roll_back(body: RollbackBody, user: CurrentUser) -> schemas.Published:
        allowed(user, "rollback")
        try:
            path = rollback(settings.model_dir, body.to, settings.database_url, user.name)
        except RollbackError as err:
            raise HTTPException(409, str(err)) from err
        return {"published": path.name}


def add_trend_routes(app: FastAPI, settings: Settings) -> None:
    @app.get("/api/trends")
    def trends(
        conn: Db, user: CurrentUser, days: Annotated[int, Query(ge=1, le=366)] = 30
    ) -> schemas.Trends:
        return {**queries.trends(conn, days), "digests": digests(settings.console_digest_dir)}

    @app.get("/api/digests/{day}/{name}")
    def digest_file(
        day: date, name: Annotated[str, PathParam(pattern=DIGEST_FILE)], user: CurrentUser
    ) -> FileResponse:
        path = settings.console_digest_dir / day.isoformat() / name
        if not path.is_file():
            raise HTTPException(404, "no such digest file")
        return FileResponse(path, filename=f"digest-{day.isoformat()}-{name}")


def digests(root: Path) -> list[dict[str, Any]]:
    """The daily digests on disk (jobs/digest.py writes one directory per day)."""
    found = []
    for day_dir in sorted(Path(root).glob("????-??-??"), reverse=True):
        try:
            day = date.fromisoformat(day_dir.name)
        except ValueError:
            continue
        files = sorted(p.name for p in day_dir.iterdir() if p.suffix in (".csv", ".html"))
        found.append({"day": day.isoformat(), "files": files})
    return found


def add_live_routes(app: FastAPI, settings: Settings) -> None:
    @app.get("/api/live/status")
    def status(conn: Db, user: CurrentUser) -> schemas.LiveStatus:
        served = queries.served_version(conn)
        versions = {v["version"]: v for v in version_summaries(settings)}
        if served not in versions and versions:
            served = next(iter(versions))
        thresholds = versions[served]["thresholds"] if served in versions else None
        lag = live.consumer_lag(settings)
        return {"model_version": served, "thresholds": thresholds, "consumer_lag": lag,
                "consumer_group": settings.consumer_group}  # fmt: skip

    @app.get("/api/live/stream")
    async def stream(request: Request, user: CurrentUser) -> StreamingResponse:
        events = live.score_stream(settings, request.is_disconnected)
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)


def add_frontend(app: FastAPI) -> None:
    """The built React app: its assets, and index.html for every screen's path (the
    sign-in page is one of them, so these need no session; they hold no data)."""
    index = WEB_DIST / "index.html"
    if (WEB_DIST / "assets").is_dir():
        app.mount("/assets", StaticFiles(directory=WEB_DIST / "assets"), name="assets")

    @app.get("/{path:path}", include_in_schema=False)
    def spa(path: str) -> Response:
        if path.startswith("api/"):
            raise HTTPException(404, "no such API route")
        if not index.is_file():
            return Response("the frontend is not built: run `make console-web`", 503)
        return FileResponse(index)
