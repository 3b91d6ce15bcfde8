"""The console's rules and lists API on real Postgres: a refused rule names its position, the
backtest's counts agree with a query written here independently, publishing needs the
backtest, viewers may not write, and shadow matches are counted for the Trends screen."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fraudops.geoip import ip_hash
from fraudops.rules import HASH_PREFIX, shown_value
from testkit.stack import fresh_database
from tests.helpers.console_env import (
    add_account,
    client_for,
    console_settings,
    insert_rows,
    signed_in,
)
from tests.helpers.serving_env import query


@pytest.fixture
def url(postgres_server_url):
    with fresh_database(postgres_server_url, "fraudops_console_rules") as url:
        yield url


@pytest.fixture
def client(url):
    with client_for(console_settings(url)) as client:
        yield signed_in(client, add_account(url, "analyst"))


def label(url: str, ids: list[str], value: str) -> None:
    for tx_id in ids:
        query(url, "INSERT INTO feedback_labels (transaction_id, label, source) "
              "VALUES (%s, %s, 'test') RETURNING 1", (tx_id, value))  # fmt: skip


def seed(url: str) -> None:
    """Transfers and payments of several amounts and bands, some labelled, in the last day."""
    now = int(datetime.now(UTC).timestamp())
    rows = [{"type": t, "amount": a, "band": b, "user_id": 100 + i, "event_ts": now - 600 + i}
            for i, (t, a, b) in enumerate(
                [(t, a, b) for t in ("TRANSFER", "PAYMENT") for a in (50.0, 6000.0, 9000.0)
                 for b in ("ALLOW", "CHALLENGE", "BLOCK")])]  # fmt: skip
    ids = insert_rows(url, rows)
    label(url, ids[:6], "FRAUD")
    label(url, ids[6:9], "LEGIT")


def test_a_refused_rule_answers_its_position(client):
    response = client.put("/api/rules/big", json={"action": "block", "condition": "amount >",
                                                   "reason": "try"})  # fmt: skip
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail["field"] == "rules[big].condition"
    assert detail["position"] == [1, 9]


def test_backtest_counts_agree_with_an_independent_query_and_gate_publishing(client, url):
    seed(url)
    condition = "amount > 5000.0 && type == 'TRANSFER'"
    saved = client.put("/api/rules/big_transfers", json={"action": "review",
                       "condition": condition, "reason": "case 7"})  # fmt: skip
    assert saved.status_code == 200, saved.text
    (listed,) = client.get("/api/rules").json()["rules"]
    assert (listed["version"], listed["backtested"]) == (1, False)
    refused = client.post("/api/rules/big_transfers/publish", json={"mode": "live", "reason": "x"})
    assert refused.status_code == 422
    assert "backtest" in refused.json()["detail"]["problem"]
    now = datetime.now(UTC)
    period = {"period_from": (now - timedelta(days=1)).isoformat(), "period_to": now.isoformat()}
    result = client.post("/api/rules/big_transfers/backtest", json=period)
    assert result.status_code == 200, result.text
    result = result.json()
    expected = dict(query(url, "SELECT band, count(*) FROM scored_transactions "
                          "WHERE amount > 5000 AND type = 'TRANSFER' GROUP BY band"))  # fmt: skip
    assert result["by_band"] == {b: expected.get(b, 0) for b in ("ALLOW", "CHALLENGE", "BLOCK")}
    labels = dict(query(url, "SELECT f.label, count(*) FROM scored_transactions s JOIN "
                        "feedback_labels f USING (transaction_id) WHERE s.amount > 5000 AND "
                        "s.type = 'TRANSFER' GROUP BY f.label"))  # fmt: skip
    assert result["labelled"] == {"FRAUD": labels.get("FRAUD", 0), "LEGIT": labels.get("LEGIT", 0)}
    (value,) = query(url, "SELECT sum(amount) FROM scored_transactions "
                     "WHERE amount > 5000 AND type = 'TRANSFER'")[0]  # fmt: skip
    assert result["value"] == value
    assert len(result["transactions"]) == result["matched"] == sum(expected.values())
    (listed,) = client.get("/api/rules").json()["rules"]
    assert (listed["version"], listed["backtested"]) == (1, True)
    published = client.post("/api/rules/big_transfers/publish",
                            json={"mode": "shadow", "reason": "watch a week"})  # fmt: skip
    assert published.status_code == 200, published.text
    (served,) = query(url, "SELECT rules FROM rule_set_versions ORDER BY version DESC LIMIT 1")[0]
    assert [r["name"] for r in served] == ["big_transfers"]
    audit = query(url, "SELECT kind FROM audit_log WHERE subject = 'big_transfers' ORDER BY id")
    assert [k for (k,) in audit] == ["rule_save", "rule_publish"]


def test_lists_are_edited_with_a_reason_and_viewers_may_not(client, url):
    created = client.post("/api/lists", json={"name": "vips", "kind": "customer",
                                               "reason": "trusted"})  # fmt: skip
    assert created.status_code == 200, created.text
    added = client.post("/api/lists/vips/items", json={"values": ["cus_1", "cus_2"],
                        "reason": "KYC done"})  # fmt: skip
    assert added.json() == {"added": 2}
    assert {i["value"] for i in client.get("/api/lists/vips").json()["items"]} == {"cus_1", "cus_2"}
    expired = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    client.post("/api/lists/vips/items", json={"values": ["cus_3"], "reason": "trial",
                "expires_at": expired})  # fmt: skip
    (listed,) = client.get("/api/lists").json()["lists"]
    assert (listed["name"], listed["kind"], listed["items"]) == ("vips", "customer", 2)
    with client_for(console_settings(url)) as viewer:
        signed_in(viewer, add_account(url, "viewer"))
        denied = viewer.post("/api/lists/vips/items", json={"values": ["cus_3"], "reason": "x"})
    assert denied.status_code == 403


def test_shadow_matches_are_counted_per_day(client, url):
    ids = insert_rows(url, [{"amount": 1.0}, {"amount": 2.0}])
    query(url, "UPDATE scored_transactions SET shadow_rules = '{watch}' WHERE transaction_id "
          "= ANY(%s) RETURNING 1", (ids,))  # fmt: skip
    matches = client.get("/api/rules/shadow").json()["matches"]
    assert [(m["rule"], m["count"]) for m in matches] == [("watch", 2)]


KEY = "console-ip-hash-key"


def test_ip_addresses_are_kept_hashed_shown_masked_and_backtested_by_hash(url):
    """An address kept as given before hashing is hashed when the console starts; one added
    is stored hashed; both are shown masked; a backtest matches stored scores by ip_hash."""
    query(url, "INSERT INTO rule_lists (name, kind, created_by) VALUES ('bad_ips', 'ip', 'a'); "
          "INSERT INTO rule_list_items (list_name, value, added_by, reason) VALUES "
          "('bad_ips', '192.0.2.1/32', 'a', 'old') RETURNING 1")  # fmt: skip
    with client_for(console_settings(url, ip_hash_key=KEY)) as client:
        signed_in(client, add_account(url, "analyst"))
        added = client.post("/api/lists/bad_ips/items", json={"values": ["203.0.113.7",
                            "198.51.100.0/24"], "reason": "case 9"})  # fmt: skip
        assert added.json() == {"added": 2}
        items = client.get("/api/lists/bad_ips").json()["items"]
        hashed = {HASH_PREFIX + ip_hash(a, KEY) for a in ("192.0.2.1", "203.0.113.7")}
        assert {i["value"] for i in items} == hashed | {"198.51.100.0/24"}
        assert {i["shown"] for i in items} == {shown_value(v) for v in hashed} | {"198.51.100.0/24"}
        assert "192.0.2.1" not in str(query(url, "SELECT * FROM rule_list_items"))
        ids = insert_rows(url, [{"ip_hash": ip_hash("203.0.113.7", KEY)},
                                {"ip_hash": ip_hash("203.0.113.8", KEY)}])  # fmt: skip
        client.put("/api/rules/ips", json={"action": "block", "reason": "case 9",
                   "condition": "in_list('bad_ips', ip_address)"})  # fmt: skip
        now = datetime.now(UTC)
        period = {"period_from": "2000-01-01T00:00:00Z", "period_to": now.isoformat()}
        result = client.post("/api/rules/ips/backtest", json=period).json()
        assert [t["transaction_id"] for t in result["transactions"]] == ids[:1]


def test_a_list_is_deleted_with_a_reason_unless_a_served_rule_reads_it(client, url):
    client.post("/api/lists", json={"name": "vips", "kind": "customer", "reason": "trusted"})
    client.post("/api/lists/vips/items", json={"values": ["cus_1"], "reason": "KYC"})
    rule = {"action": "allow", "condition": "in_list('vips', stripe_customer_id)", "reason": "r"}
    assert client.put("/api/rules/trusted", json=rule).status_code == 200
    now = datetime.now(UTC)
    period = {"period_from": (now - timedelta(days=1)).isoformat(), "period_to": now.isoformat()}
    client.post("/api/rules/trusted/backtest", json=period)
    client.post("/api/rules/trusted/publish", json={"mode": "live", "reason": "go"})
    with client_for(console_settings(url)) as viewer:
        signed_in(viewer, add_account(url, "viewer"))
        denied = viewer.post("/api/lists/vips/delete", json={"reason": "x"})
    assert denied.status_code == 403
    refused = client.post("/api/lists/vips/delete", json={"reason": "unused"})
    assert refused.status_code == 422
    assert "trusted" in refused.json()["detail"]["problem"]
    client.post("/api/rules/trusted/publish", json={"mode": "off", "reason": "retired"})
    deleted = client.post("/api/lists/vips/delete", json={"reason": "case closed"})
    assert deleted.json() == {"deleted": "vips", "items": 1}
    assert client.get("/api/lists").json()["lists"] == []
    audit = query(url, "SELECT detail->>'by', detail->>'reason' FROM audit_log "
                  "WHERE kind = 'list_delete' AND subject = 'vips'")  # fmt: skip
    assert [(by.split("-")[0], why) for by, why in audit] == [("analyst", "case closed")]
    assert client.post("/api/lists/vips/delete", json={"reason": "again"}).status_code == 422
