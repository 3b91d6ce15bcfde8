"""What the console tests share: accounts, scored rows and a signed-in TestClient against
the session's real Postgres (migrations applied, 003 among them)."""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import replace

from fastapi.testclient import TestClient

from console import auth
from console.app import create_app
from fraudops.db import connect
from fraudops.settings import Settings
from testkit.stack import db_cursor

PASSWORD = "correct horse battery"


def console_settings(database_url: str, **overrides) -> Settings:
    return replace(Settings(), database_url=database_url, **overrides)


def add_account(database_url: str, role: str) -> str:
    """A fresh account of `role`; returns its name (the password is PASSWORD)."""
    name = f"{role}-{secrets.token_hex(4)}"
    conn = connect(database_url)
    try:
        auth.add_user(conn, name, role, PASSWORD)
    finally:
        conn.close()
    return name


def signed_in(client: TestClient, name: str, password: str = PASSWORD) -> TestClient:
    """Sign `client` in; writes then carry the CSRF header, as the frontend's do."""
    response = client.post("/api/auth/login", json={"name": name, "password": password})
    assert response.status_code == 200, response.text
    client.headers[auth.CSRF_HEADER] = client.cookies[auth.CSRF_COOKIE]
    return client


def client_for(settings: Settings) -> TestClient:
    """A client of the app from an address of its own (failed sign-ins count per client)."""
    return TestClient(create_app(settings), client=(f"client-{uuid.uuid4().hex[:8]}", 50000))


def insert_rows(database_url: str, rows: list[dict]) -> list[str]:
    """scored_transactions rows (defaults for what a row leaves out); returns their ids."""
    defaults = {
        "user_id": 7, "event_ts": 1_700_000_000, "type": "TRANSFER", "amount": 100.0,
        "channel": "web", "score": 0.9, "band": "BLOCK", "model_version": "v1",
        "reasons": ["amount drains the origin balance"], "latency_us": 250, "source": "stream",
    }  # fmt: skip
    ids = []
    with db_cursor(database_url) as cur:
        for row in rows:
            values = {"transaction_id": f"tx-{uuid.uuid4().hex[:12]}", **defaults, **row}
            values["reasons"] = json.dumps(values["reasons"])
            columns = ", ".join(values)
            marks = ", ".join(["%s"] * len(values))
            cur.execute(
                f"INSERT INTO scored_transactions ({columns}) VALUES ({marks})",
                list(values.values()),
            )
            ids.append(values["transaction_id"])
    return ids


def insert_drift_report(database_url: str, model_version: str, alarm: bool) -> None:
    """A drift watch window as the job writes it, newest of all (window in 2099)."""
    with db_cursor(database_url) as cur:
        cur.execute(
            "INSERT INTO drift_reports (window_start, window_end, model_version, rows,"
            " drifted, consecutive, alarm, drifted_features, max_feature_psi, score_psi,"
            " band_psi, skew_checked, skew_mismatches, report) VALUES ('2099-01-01 10:00Z',"
            " '2099-01-01 11:00Z', %s, 5000, true, 3, %s, %s, 1.39, 0.05, 0.02, 40, 0, '{}')",
            (model_version, alarm, ["log_amount[TRANSFER]", "type_mix"]),
        )
