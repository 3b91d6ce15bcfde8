"""The console's API against the real Postgres: who may call what, sign-in, CSRF and the
failed-login limit, the queue's filters and pages, labels through serving.labels, and
hostile input."""

from __future__ import annotations

import csv
import io
import re
import secrets
import uuid
from datetime import date, timedelta

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.routing import Route

from console import auth
from console.app import PUBLIC_ROUTES, create_app
from fraudops.db import connect
from fraudops.review_queue import QueuePolicy, day_span
from jobs.review_queue import build_queue
from tests.helpers.console_env import (
    PASSWORD,
    add_account,
    client_for,
    console_settings,
    insert_drift_report,
    insert_rows,
    signed_in,
)
from tests.helpers.serving_env import query


@pytest.fixture(scope="module")
def settings(database_url):
    return console_settings(database_url)


@pytest.fixture
def client(settings):
    with client_for(settings) as c:
        yield c


@pytest.fixture
def analyst(database_url):
    return add_account(database_url, "analyst")


@pytest.fixture
def version() -> str:
    """A model version of this test's own, so its queue holds only its rows."""
    return f"mv-{uuid.uuid4().hex[:10]}"


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: "2026-01-01" if m.group() == "{day}" else "x.csv", path)


def api_routes(app) -> list[tuple[str, str]]:
    found = []
    for route in app.routes:
        if isinstance(route, Route) and route.path.startswith("/api/"):
            found += [(m, route.path) for m in route.methods if m != "HEAD"]
    return found


def test_every_api_route_needs_a_session(settings):
    app = create_app(settings)
    routes = api_routes(app)
    assert len(routes) >= 15
    others = {r.path for r in app.routes if not r.path.startswith("/api/")}
    assert others <= {"/{path:path}", "/assets"}, "only the frontend's files are public"
    with client_for(settings) as anonymous:
        for method, path in routes:
            if (method, path) in PUBLIC_ROUTES:
                continue
            response = anonymous.request(method, concrete(path))
            assert response.status_code == 401, (method, path, response.text)
        for method, path in PUBLIC_ROUTES:
            assert (method, path) in routes


# Answers that are not JSON (a download, a file, an event stream) have no response model.
RAW_ROUTES = {"/api/queue.csv", "/api/digests/{day}/{name}", "/api/live/stream"}


def is_model(answer) -> bool:
    return isinstance(answer, type) and issubclass(answer, BaseModel)


def test_every_json_route_declares_its_answer(settings):
    """The frontend's types are generated from these models: a route without one would be
    typed by hand again."""
    app = create_app(settings)
    untyped = [r.path for r in app.routes if isinstance(r, APIRoute) and r.path.startswith("/api/")
               and r.path not in RAW_ROUTES and not is_model(r.response_model)]  # fmt: skip
    assert untyped == []
    assert set(app.openapi()["components"]["schemas"]) >= {"QueuePage", "TransactionDetail"}


def test_frontend_paths_hold_no_data(client):
    response = client.get("/api-not/queue")
    assert response.status_code in (200, 503)
    assert client.get("/api/nothing-here").status_code in (401, 404)


def test_sign_in_sets_strict_http_only_cookie_and_audits(client, analyst, database_url):
    response = client.post("/api/auth/login", json={"name": analyst, "password": PASSWORD})
    assert response.status_code == 200
    cookies = response.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith(auth.SESSION_COOKIE + "="))
    assert "HttpOnly" in session and "SameSite=strict" in session
    assert "Secure" not in session  # plain http on loopback; https sets it
    csrf = next(c for c in cookies if c.startswith(auth.CSRF_COOKIE + "="))
    assert "HttpOnly" not in csrf
    assert client.get("/api/auth/me").json()["name"] == analyst
    rows = query(database_url, "SELECT kind FROM audit_log WHERE subject = %s", (analyst,))
    assert ("login",) in rows


def test_wrong_password_is_refused_and_audited(client, analyst, database_url):
    response = client.post("/api/auth/login", json={"name": analyst, "password": "nope"})
    assert response.status_code == 401
    assert client.get("/api/auth/me").status_code == 401
    rows = query(database_url, "SELECT kind FROM audit_log WHERE subject = %s", (analyst,))
    assert rows == [("login_failed",)]


def sign_in_status(client, name: str, password: str, forwarded: str | None = None) -> int:
    body = {"name": name, "password": password}
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return client.post("/api/auth/login", json=body, headers=headers).status_code


def test_failed_sign_ins_lock_the_pair(database_url, analyst):
    settings = console_settings(database_url, console_login_max_failures=3,
                                console_login_first_delay_s=0)  # fmt: skip
    with client_for(settings) as client:
        assert [sign_in_status(client, analyst, "wrong") for _ in range(3)] == [401] * 3
        # Even the right password waits now: guessing cannot continue at full speed.
        good = client.post("/api/auth/login", json={"name": analyst, "password": PASSWORD})
        assert good.status_code == 429
        assert "Retry-After" in good.headers


def test_five_failures_from_one_client_do_not_lock_the_account_for_another(database_url, analyst):
    settings = console_settings(database_url, console_login_first_delay_s=0)
    with client_for(settings) as attacker, client_for(settings) as colleague:
        assert [sign_in_status(attacker, analyst, "wrong") for _ in range(5)] == [401] * 5
        assert sign_in_status(attacker, analyst, PASSWORD) == 429
        signed_in(colleague, analyst)
        assert colleague.get("/api/auth/me").json()["name"] == analyst


def test_each_failure_makes_the_pair_wait_longer(database_url, analyst):
    settings = console_settings(database_url, console_login_first_delay_s=60)
    other = add_account(database_url, "viewer")
    with client_for(settings) as client:
        assert sign_in_status(client, analyst, "wrong") == 401
        again = client.post("/api/auth/login", json={"name": analyst, "password": PASSWORD})
        assert again.status_code == 429
        assert 0 < int(again.headers["Retry-After"]) <= 60
        assert sign_in_status(client, other, PASSWORD) == 200  # another pair: not slowed


def test_forwarded_for_counts_only_from_a_trusted_proxy(database_url, analyst):
    proxy = f"proxy-{uuid.uuid4().hex[:6]}"
    settings = console_settings(database_url, console_login_first_delay_s=0,
                                console_trusted_proxies=proxy)  # fmt: skip
    app = create_app(settings)
    with TestClient(app, client=(proxy, 443)) as via_proxy, client_for(settings) as direct:
        guesses = [sign_in_status(via_proxy, analyst, "wrong", "203.0.113.7") for _ in range(5)]
        assert guesses == [401] * 5
        assert sign_in_status(via_proxy, analyst, PASSWORD, "203.0.113.7") == 429
        assert sign_in_status(via_proxy, analyst, PASSWORD, "198.51.100.9") == 200
        # A client that is not a proxy cannot rotate its apparent address.
        rotated = [sign_in_status(direct, analyst, "wrong", f"10.0.0.{i}") for i in range(5)]
        assert rotated == [401] * 5
        assert sign_in_status(direct, analyst, PASSWORD, "10.9.9.9") == 429


def test_expired_session_answers_401(database_url, analyst):
    settings = console_settings(database_url, console_session_ttl_s=0)
    with client_for(settings) as client:
        signed_in(client, analyst)
        assert client.get("/api/auth/me").status_code == 401


def test_writes_need_the_csrf_header(client, analyst, version, database_url):
    (tx,) = insert_rows(database_url, [{"model_version": version}])
    signed_in(client, analyst)
    token = client.headers.pop(auth.CSRF_HEADER)
    body = {"label": "FRAUD"}
    assert client.post(f"/api/transactions/{tx}/label", json=body).status_code == 403
    wrong = {auth.CSRF_HEADER: token[::-1]}
    assert client.post(f"/api/transactions/{tx}/label", json=body, headers=wrong).status_code == 403
    stored = "SELECT 1 FROM feedback_labels WHERE transaction_id = %s"
    assert query(database_url, stored, (tx,)) == []
    ok = client.post(f"/api/transactions/{tx}/label", json=body, headers={auth.CSRF_HEADER: token})
    assert ok.status_code == 200


def test_viewer_reads_but_may_not_write(client, database_url, version):
    (tx,) = insert_rows(database_url, [{"model_version": version}])
    signed_in(client, add_account(database_url, "viewer"))
    assert client.get("/api/queue", params={"model_version": version}).status_code == 200
    assert client.get("/api/auth/me").json()["may"] == []
    assert client.post(f"/api/transactions/{tx}/label", json={"label": "FRAUD"}).status_code == 403
    assert client.post(f"/api/transactions/{tx}/claim").status_code == 403
    assert client.post("/api/models/rollback", json={}).status_code == 403
    assert client.post("/api/auth/logout").status_code == 200


def test_the_models_page_carries_the_latest_drift_window_and_its_alarm(
    client, analyst, version, database_url
):
    insert_drift_report(database_url, version, alarm=True)
    signed_in(client, analyst)
    drift = client.get("/api/models").json()["drift"]
    assert drift["model_version"] == version and drift["alarm"] is True
    assert drift["drifted_features"] == ["log_amount[TRANSFER]", "type_mix"]
    assert drift["consecutive"] == 3 and drift["last_alarm_at"].startswith("2099-01-01T11:00")


def test_analyst_may_not_roll_back(client, analyst):
    signed_in(client, analyst)
    assert client.post("/api/models/rollback", json={"to": "v1"}).status_code == 403


def test_label_goes_through_record_label_with_the_analyst_as_source(
    client, analyst, version, database_url
):
    (tx,) = insert_rows(database_url, [{"model_version": version}])
    signed_in(client, analyst)
    body = {"label": "FRAUD", "note": "card testing", "source": "analyst:someone-else"}
    assert client.post(f"/api/transactions/{tx}/label", json=body).status_code == 422
    del body["source"]
    response = client.post(f"/api/transactions/{tx}/label", json=body)
    assert response.status_code == 200, response.text
    assert query(
        database_url,
        "SELECT label, source, note FROM feedback_labels WHERE transaction_id = %s",
        (tx,),
    ) == [("FRAUD", f"analyst:{analyst}", "card testing")]
    audit = query(
        database_url, "SELECT detail FROM audit_log WHERE kind = 'label' AND subject = %s", (tx,)
    )
    assert [a[0]["source"] for a in audit] == [f"analyst:{analyst}"]

    undo = client.post(f"/api/transactions/{tx}/label", json={"label": "LEGIT"})
    assert undo.json()["superseded"] == "FRAUD"
    detail = client.get(f"/api/transactions/{tx}").json()
    assert detail["label"]["label"] == "LEGIT" and detail["label"]["supersedes"] == "FRAUD"
    assert [(h["old"], h["new"]) for h in detail["label_history"]] == [
        (None, "FRAUD"),
        ("FRAUD", "LEGIT"),
    ]


def test_label_of_unknown_transaction_is_404(client, analyst):
    signed_in(client, analyst)
    response = client.post("/api/transactions/never-scored/label", json={"label": "FRAUD"})
    assert response.status_code == 404
    assert "transaction_id" in response.json()["detail"]


def queue_day(database_url: str, days_ahead: int) -> tuple[date, list[str]]:
    """A day of its own (years ahead, so no other test's queue shares it) with 6 scored
    rows, and its queue built by the job: k = 4, one of them a random sample of ALLOW."""
    day = date(2090, 1, 1) + timedelta(days=days_ahead)
    start, _ = day_span(day)
    scores = [0.95, 0.9, 0.72, 0.5, 0.1, 0.05]
    bands = ["BLOCK", "BLOCK", "BLOCK", "CHALLENGE", "ALLOW", "ALLOW"]
    ids = insert_rows(database_url, [
        {"event_ts": start + i, "score": s, "band": b}
        for i, (s, b) in enumerate(zip(scores, bands, strict=True))
    ])  # fmt: skip
    conn = connect(database_url)
    try:
        policy = QueuePolicy(daily_budget=4, explore_share=0.5, random_share=0.5, seed=1)
        build_queue(conn, day, policy)
    finally:
        conn.close()
    return day, ids


def test_the_review_queue_lists_the_jobs_items_with_their_reasons(client, analyst, database_url):
    day, ids = queue_day(database_url, secrets.randbelow(3000))
    signed_in(client, analyst)
    page = client.get("/api/review-queue", params={"day": day.isoformat()}).json()
    assert page["day"] == day.isoformat()
    items = page["items"]
    assert [i["position"] for i in items] == [1, 2, 3, 4]
    assert [i["reason"] for i in items] == [
        "exploit", "exploit", "explore-threshold", "explore-random"
    ]  # fmt: skip
    assert items[0]["transaction_id"] == ids[0] and items[-1]["band"] == "ALLOW"
    assert {d["day"] for d in page["days"]} >= {day.isoformat()}
    newest = client.get("/api/review-queue").json()
    assert newest["day"] == page["days"][0]["day"]
    assert client.get("/api/review-queue", params={"day": "soon"}).status_code == 422


def test_a_label_from_the_queue_is_stored_with_its_reason(client, analyst, database_url):
    day, ids = queue_day(database_url, secrets.randbelow(3000))
    signed_in(client, analyst)
    sampled = client.get("/api/review-queue", params={"day": day.isoformat()}).json()["items"][-1]
    tx = sampled["transaction_id"]
    body = {"label": "FRAUD", "queue_date": day.isoformat()}
    response = client.post(f"/api/transactions/{tx}/label", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["queue_reason"] == "explore-random"
    stored = "SELECT label, source, queue_reason FROM feedback_labels WHERE transaction_id = %s"
    assert query(database_url, stored, (tx,)) == [
        ("FRAUD", f"analyst:{analyst}", "explore-random")
    ]  # fmt: skip
    after = client.get("/api/review-queue", params={"day": day.isoformat()}).json()["items"][-1]
    assert (after["label"], after["label_reason"]) == ("FRAUD", "explore-random")
    outside = ids[4] if ids[4] != tx else ids[5]  # the ALLOW row the sample left out
    refused = client.post(f"/api/transactions/{outside}/label", json=body)
    assert refused.status_code == 409 and "queue_date" in refused.json()["detail"]
    assert query(database_url, stored, (outside,)) == []


def test_queue_holds_unlabelled_flagged_rows_by_score_and_pages_by_keyset(
    client, analyst, version, database_url
):
    scores = [0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65]
    rows = [{"model_version": version, "score": s, "band": "CHALLENGE"} for s in scores]
    rows += [{"model_version": version, "score": 0.1, "band": "ALLOW"}]
    ids = insert_rows(database_url, rows)
    signed_in(client, analyst)
    client.post(f"/api/transactions/{ids[1]}/label", json={"label": "LEGIT"})

    seen, cursor = [], None
    for _ in range(10):
        params = {"model_version": version, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/queue", params=params).json()
        seen += [item["score"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [0.95, 0.85, 0.8, 0.75, 0.7, 0.65]

    labelled = client.get("/api/queue", params={"model_version": version, "labelled": "yes"})
    assert [i["transaction_id"] for i in labelled.json()["items"]] == [ids[1]]
    newest = client.get("/api/queue", params={"model_version": version, "sort": "newest"})
    assert len(newest.json()["items"]) == 6


def test_queue_filters(client, analyst, version, database_url):
    ids = insert_rows(database_url, [
        {"model_version": version, "band": "BLOCK", "type": "TRANSFER", "amount": 5000.0,
         "source": "stream", "user_id": 4242},
        {"model_version": version, "band": "CHALLENGE", "type": "PAYMENT", "amount": 20.0,
         "source": "inline", "user_id": 4343},
    ])  # fmt: skip
    signed_in(client, analyst)

    def found(**params) -> list[str]:
        response = client.get("/api/queue", params={"model_version": version, **params})
        assert response.status_code == 200, response.text
        return [i["transaction_id"] for i in response.json()["items"]]

    assert found(band="BLOCK") == [ids[0]]
    assert sorted(found(type=["PAYMENT", "TRANSFER"])) == sorted(ids)
    assert found(amount_min=1000) == [ids[0]]
    assert found(amount_max=100) == [ids[1]]
    assert found(source="inline") == [ids[1]]
    assert found(q="4343") == [ids[1]]
    assert found(q=ids[0]) == [ids[0]]
    assert found(until="2000-01-01T00:00:00Z") == []
    assert len(found(since="2000-01-01T00:00:00Z")) == 2


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"band": "ALLOW"}, "band"),
        ({"type": "WIRE"}, "type"),
        ({"amount_min": "-1"}, "amount_min"),
        ({"amount_max": "nan"}, "amount_max"),
        ({"since": "yesterday"}, "since"),
        ({"source": "kafka"}, "source"),
        ({"labelled": "maybe"}, "labelled"),
        ({"sort": "amount"}, "sort"),
        ({"limit": "0"}, "limit"),
        ({"limit": "10000"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"q": "x" * 500}, "q"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_query_parameters_are_422_naming_the_field(client, analyst, params, field):
    signed_in(client, analyst)
    response = client.get("/api/queue", params=params)
    assert response.status_code == 422, response.text
    assert field in response.text


@pytest.mark.parametrize("search", ["' OR 1=1 --", "<script>alert(1)</script>", "1; DROP TABLE x"])
def test_hostile_searches_find_nothing_and_break_nothing(
    client, analyst, version, database_url, search
):
    insert_rows(database_url, [{"model_version": version}])
    signed_in(client, analyst)
    response = client.get("/api/queue", params={"q": search, "labelled": "any"})
    assert response.status_code == 200
    assert response.json()["items"] == []
    assert len(client.get("/api/queue", params={"model_version": version}).json()["items"]) == 1


def test_markup_in_a_field_comes_back_as_json_text(client, analyst, version, database_url):
    channel = "<img src=x onerror=alert(1)>"
    (tx,) = insert_rows(database_url, [{"model_version": version, "channel": channel}])
    signed_in(client, analyst)
    response = client.get(f"/api/transactions/{tx}")
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "script-src" not in response.headers["content-security-policy"]  # 'self' only
    assert response.json()["transaction"]["channel"] == channel


def test_transaction_detail_has_the_users_day(client, analyst, version, database_url):
    base = 1_750_000_000
    ids = insert_rows(database_url, [
        {"model_version": version, "user_id": 99_001, "event_ts": base - 90_000,
         "ip_country": "DE", "ip_kind": "public", "card_country": "DE"},
        {"model_version": version, "user_id": 99_001, "event_ts": base - 3_600, "band": "ALLOW",
         "ip_country": "DE", "ip_kind": "public", "card_country": "DE"},
        {"model_version": version, "user_id": 99_001, "event_ts": base,
         "ip_country": "BR", "ip_kind": "public", "card_country": "DE"},
        {"model_version": version, "user_id": 99_001, "event_ts": base + 60, "ip_country": "US"},
    ])  # fmt: skip
    signed_in(client, analyst)
    detail = client.get(f"/api/transactions/{ids[2]}").json()
    assert detail["transaction"]["reasons"] == ["amount drains the origin balance"]
    assert detail["transaction"]["latency_us"] == 250
    assert [r["transaction_id"] for r in detail["user_last_24h"]] == [ids[2], ids[1]]
    located = {k: detail["transaction"][k] for k in ("ip_country", "card_country", "ip_kind")}
    assert located == {"ip_country": "BR", "card_country": "DE", "ip_kind": "public"}
    countries = [(c["country"], c["payments"]) for c in detail["user_countries"]]
    assert countries == [("BR", 1), ("DE", 2)]  # up to this payment, the latest first
    assert client.get("/api/transactions/nope").status_code == 404


def test_claims_keep_two_analysts_apart(client, settings, analyst, version, database_url):
    (tx,) = insert_rows(database_url, [{"model_version": version}])
    signed_in(client, analyst)
    assert client.post(f"/api/transactions/{tx}/claim").json()["claimed_by"] == analyst
    with client_for(settings) as other:
        signed_in(other, add_account(database_url, "analyst"))
        assert other.post(f"/api/transactions/{tx}/claim").status_code == 409
        hidden = other.get("/api/queue", params={"model_version": version, "hide_claimed": True})
        assert hidden.json()["items"] == []
        client.delete(f"/api/transactions/{tx}/claim")
        assert other.post(f"/api/transactions/{tx}/claim").status_code == 200


def test_claims_expire(database_url, analyst, version):
    (tx,) = insert_rows(database_url, [{"model_version": version}])
    settings = console_settings(database_url, console_claim_ttl_s=0)
    with client_for(settings) as client, client_for(settings) as other:
        signed_in(client, analyst)
        signed_in(other, add_account(database_url, "analyst"))
        assert client.post(f"/api/transactions/{tx}/claim").status_code == 200
        assert other.post(f"/api/transactions/{tx}/claim").status_code == 200


def test_csv_export_of_the_filter_quotes_formulas(client, analyst, version, database_url):
    insert_rows(database_url, [
        {"model_version": version, "channel": "=HYPERLINK(\"http://x\")"},
        {"model_version": version, "band": "CHALLENGE"},
    ])  # fmt: skip
    signed_in(client, analyst)
    response = client.get("/api/queue.csv", params={"model_version": version})
    assert response.status_code == 200
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert len(table) == 2
    assert {r["channel"] for r in table} == {'\'=HYPERLINK("http://x")', "web"}
    one = client.get("/api/queue.csv", params={"model_version": version, "band": "CHALLENGE"})
    assert len(list(csv.DictReader(io.StringIO(one.text)))) == 1


def test_trends_count_labels_by_band_and_analyst(client, analyst, version, database_url):
    ids = insert_rows(database_url, [{"model_version": version} for _ in range(3)])
    signed_in(client, analyst)
    for tx, label in zip(ids, ["FRAUD", "FRAUD", "LEGIT"], strict=True):
        client.post(f"/api/transactions/{tx}/label", json={"label": label})
    trends = client.get("/api/trends", params={"days": 2}).json()
    mine = [t for t in trends["throughput"] if t["source"] == f"analyst:{analyst}"]
    assert sum(t["labels"] for t in mine) == 3
    block = next(p for p in trends["precision"] if p["band"] == "BLOCK")
    assert block["labelled"] >= 3 and 0 < block["precision"] <= 1
    assert client.get("/api/trends", params={"days": 0}).status_code == 422
    assert client.get("/api/digests/2026-01-01/..%2Fsecret.csv").status_code in (404, 422)


def test_one_client_spraying_accounts_is_limited(database_url):
    settings = console_settings(database_url, console_login_max_client_failures=4)
    with client_for(settings) as client:
        codes = [
            client.post("/api/auth/login", json={"name": f"guess{i}", "password": "x"}).status_code
            for i in range(6)
        ]
    assert codes == [401, 401, 401, 401, 429, 429]


def test_cross_origin_writes_are_refused(client, analyst):
    evil = {"Origin": "http://evil.example"}
    login = {"name": analyst, "password": PASSWORD}
    assert client.post("/api/auth/login", json=login, headers=evil).status_code == 403
    same = {"Origin": "http://testserver"}
    assert client.post("/api/auth/login", json=login, headers=same).status_code == 200


def test_an_empty_export_still_has_its_header(client, analyst, version):
    signed_in(client, analyst)
    response = client.get("/api/queue.csv", params={"model_version": version})
    assert response.text.strip().split(",")[:2] == ["transaction_id", "user_id"]


def test_digests_are_listed_and_downloadable(database_url, analyst, tmp_path):
    day = tmp_path / "2026-01-01"
    day.mkdir()
    (day / "summary.csv").write_text("metric,value\ntransactions,3\n")
    (tmp_path / "not-a-day").mkdir()
    with client_for(console_settings(database_url, console_digest_dir=tmp_path)) as client:
        signed_in(client, analyst)
        listed = client.get("/api/trends").json()["digests"]
        assert listed == [{"day": "2026-01-01", "files": ["summary.csv"]}]
        file = client.get("/api/digests/2026-01-01/summary.csv")
        assert file.status_code == 200 and "transactions,3" in file.text
        assert client.get("/api/digests/2026-01-01/index.html").status_code == 404
        assert client.get("/api/digests/not-a-day/summary.csv").status_code == 422
