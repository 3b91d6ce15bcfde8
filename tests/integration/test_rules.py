"""Rules and lists in Postgres and their hot swap into a scoring core: edits audited with who
and why, publishing gated on a backtest, the stored score naming what decided, and a version
switch under load with no failed call and no mixed version inside one batch."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from fraudops import rule_sets
from fraudops.geoip import ip_hash
from fraudops.rules import HASH_PREFIX, Rule, RuleError, shown_value
from fraudops.schema import proto_to_dict
from serving.model_store import ModelStore
from serving.persistence import ScoreWriter
from serving.rule_store import RuleStore
from serving.scoring import ScoringCore
from testkit.stack import db_cursor, fresh_database
from tests.helpers.serving_env import publish_model, query, transaction, unique_ids, wait_until

WEEK = (datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 1, 8, tzinfo=UTC))


@pytest.fixture
def url(postgres_server_url):
    with fresh_database(postgres_server_url, "fraudops_rules") as url:
        yield url


def write(url: str, work):
    with db_cursor(url) as cur:
        return work(cur)


def publish_backtested(url: str, rule: Rule, mode: str = "live", position: int = 1) -> int:
    def work(cur):
        rule_sets.save_rule(cur, rule, position, "alice", "test rule")
        rule_sets.record_backtest(cur, rule, WEEK, {"matched": 0}, "alice")
        return rule_sets.publish(cur, rule.name, mode, "alice", "go live")

    return write(url, work)


@pytest.fixture
def core(built_models, serving_root, url):
    publish_model(built_models, serving_root, "v1")
    store = ModelStore(serving_root)
    store.load_latest()
    rules = RuleStore(url, poll_seconds=0.05)
    rules.start()
    yield ScoringCore(store, rules=rules)
    rules.stop()


def txs(prefix: str, n: int, **fields) -> list[dict]:
    ids = unique_ids(prefix, n)
    return [proto_to_dict(transaction(i, transaction_id=t, **fields)) for i, t in enumerate(ids)]


def test_list_edits_are_audited_with_who_and_why_and_items_expire(url):
    soon = datetime.now(UTC) + timedelta(hours=1)
    write(url, lambda cur: rule_sets.create_list(cur, "blocked_users", "user", "alice", "case 12"))
    write(
        url, lambda cur: rule_sets.add_items(cur, "blocked_users", ["7", "8"], "alice", "case 12")
    )
    write(url, lambda cur: rule_sets.add_items(cur, "blocked_users", ["9"], "bob", "trial", soon))
    write(url, lambda cur: rule_sets.remove_items(cur, "blocked_users", ["8"], "bob", "cleared"))
    audit = query(url, "SELECT kind, detail->>'by', detail->>'reason' FROM audit_log "
                  "WHERE subject = 'blocked_users' ORDER BY id")  # fmt: skip
    assert audit == [("list_create", "alice", "case 12"), ("list_add", "alice", "case 12"),
                     ("list_add", "bob", "trial"), ("list_remove", "bob", "cleared")]  # fmt: skip
    _seq, lists = write(url, rule_sets.load_lists)
    index = lists["blocked_users"]
    now = datetime.now(UTC).timestamp()
    assert [index.contains(u, now) for u in (7, 8, 9)] == [True, False, True]
    assert not index.contains(9, soon.timestamp() + 1)
    with pytest.raises(RuleError, match="reason"):
        write(url, lambda cur: rule_sets.add_items(cur, "blocked_users", ["5"], "alice", " "))
    with pytest.raises(RuleError, match=r"values\[1\]"):
        write(url, lambda cur: rule_sets.add_items(cur, "blocked_users", ["5", "x"], "a", "r"))


def test_the_cli_edits_lists(url, capsys):
    base = ["--database-url", url]
    assert (
        rule_sets.main([*base, "list-create", "bad_nets", "ip", "--by", "ops", "--reason", "x"])
        == 0
    )
    assert rule_sets.main([*base, "list-add", "bad_nets", "10.0.0.0/8", "--by", "ops",
                           "--reason", "botnet"]) == 0  # fmt: skip
    assert rule_sets.main([*base, "list-add", "bad_nets", "999.1.1.1", "--by", "ops",
                           "--reason", "typo"]) == 2  # fmt: skip
    assert rule_sets.main([*base, "list-show", "bad_nets"]) == 0
    assert "10.0.0.0/8\t-\tops\tbotnet" in capsys.readouterr().out


def test_publishing_needs_a_backtest_of_the_rule_as_it_stands(url):
    rule = Rule("big", "block", "amount > 5000.0")
    write(url, lambda cur: rule_sets.save_rule(cur, rule, 1, "alice", "new"))
    with pytest.raises(RuleError, match="backtest"):
        write(url, lambda cur: rule_sets.publish(cur, "big", "live", "alice", "now"))
    write(url, lambda cur: rule_sets.record_backtest(cur, rule, WEEK, {}, "alice"))
    changed = Rule("big", "block", "amount > 4000.0")
    write(url, lambda cur: rule_sets.save_rule(cur, changed, 1, "alice", "lower"))
    with pytest.raises(RuleError, match="backtest"):
        write(url, lambda cur: rule_sets.publish(cur, "big", "live", "alice", "now"))
    assert publish_backtested(url, changed) == 1
    with pytest.raises(RuleError, match="Syntax error"):
        write(url, lambda cur: rule_sets.save_rule(cur, Rule("b", "block", "x >"), 2, "a", "r"))


def test_a_rule_decides_and_the_answer_and_stored_row_name_it(core, url):
    write(url, lambda cur: rule_sets.create_list(cur, "blocked_users", "user", "alice", "case"))
    write(url, lambda cur: rule_sets.add_items(cur, "blocked_users", ["4242"], "alice", "case"))
    publish_backtested(url, Rule("blocked", "block", "in_list('blocked_users', user_id)"))
    publish_backtested(url, Rule("watch", "review", "amount > 0.0"), "shadow", 2)
    wait_until(lambda: len(core.rules.current) == 2, "the rule set to load", 10)
    batch = core.score([*txs("blocked", 1, user_id=4242), *txs("free", 1, user_id=5)])
    blocked, free = batch.responses()
    assert (blocked.band, blocked.decided_by) == (3, "blocked")
    assert blocked.reasons[0] == "rule blocked: block"
    assert free.decided_by == "model"
    assert blocked.rules_version == free.rules_version == core.rules.current.version
    ScoreWriter(url).write([(batch, "inline")])
    stored = query(url, "SELECT band, decided_by, shadow_rules, rules_version FROM "
                   "scored_transactions ORDER BY transaction_id")  # fmt: skip
    assert stored == [("BLOCK", "blocked", ["watch"], batch.rules_version),
                      (stored[1][0], "model", ["watch"], batch.rules_version)]  # fmt: skip


def test_a_version_switch_under_load_fails_no_call_and_mixes_no_versions(core, url):
    """Scoring threads run while versions alternate between blocking and allowing
    everything: each batch carries one version and every answer in it follows that version."""
    stop, failures, seen = threading.Event(), [], []
    action_of: dict[str, str] = {}

    def load(n: int) -> None:
        while not stop.is_set():
            try:
                batch = core.score(txs(f"load{n}", 50))
            except Exception as err:  # noqa: BLE001 - any failed call fails the test
                failures.append(err)
                return
            seen.append((batch.rules_version, {r.decided_by for r in batch.responses()},
                         set(batch.bands.tolist())))  # fmt: skip

    threads = [threading.Thread(target=load, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(6):
            action = ("block", "allow")[i % 2]
            version = publish_backtested(url, Rule("all", action, "amount > 0.0"))
            wait_until(lambda v=version: core.rules.current.version.startswith(f"{v}."),
                       f"version {version} to serve", 10)  # fmt: skip
            action_of[core.rules.current.version] = action
            count = len(seen)
            wait_until(lambda c=count: len(seen) > c + 3, "batches on the version", 30)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not failures
    served = [s for s in seen if s[0] in action_of]
    assert {s[0] for s in served} == set(action_of)
    for version, deciders, bands in served:
        assert deciders == {"all"}
        assert bands == ({2} if action_of[version] == "block" else {0})


def test_a_broken_rule_set_is_never_applied(core, url):
    publish_backtested(url, Rule("ok", "review", "amount > 0.0"))
    wait_until(lambda: len(core.rules.current) == 1, "the rule set to load", 10)
    serving = core.rules.current
    write(url, lambda cur: cur.execute(
        "INSERT INTO rule_set_versions (rules, published_by, reason) VALUES "
        "('[{\"name\": \"ok\", \"action\": \"block\", \"condition\": \"amount >\", "
        "\"mode\": \"live\"}]', 'mallory', 'by hand')"))  # fmt: skip
    wait_until(lambda: not core.rules.refresh(), "the broken set to be looked at", 10)
    assert core.rules.current is serving


KEY = "test-ip-hash-key"


def stored_values(url: str) -> list[str]:
    """Every IP list value kept anywhere: the items and the change log."""
    rows = query(url, "SELECT value FROM rule_list_items UNION ALL "
                 "SELECT value FROM rule_list_changes WHERE op <> 'reset'")  # fmt: skip
    return [v for (v,) in rows]


def test_an_ip_list_keeps_addresses_only_as_their_keyed_hash(url, capsys, monkeypatch):
    write(url, lambda cur: rule_sets.create_list(cur, "bad_ips", "ip", "alice", "case 7"))
    with pytest.raises(RuleError, match="FRAUDOPS_IP_HASH_KEY"):
        write(url, lambda cur: rule_sets.add_items(cur, "bad_ips", ["203.0.113.7"], "a", "r"))
    write(
        url,
        lambda cur: rule_sets.add_items(
            cur, "bad_ips", ["203.0.113.7", "198.51.100.0/24"], "alice", "case 7", hash_key=KEY
        ),
    )
    hashed = HASH_PREFIX + ip_hash("203.0.113.7", KEY)
    assert sorted(stored_values(url)) == sorted(["198.51.100.0/24", hashed] * 2)
    audit = query(url, "SELECT detail FROM audit_log WHERE kind = 'list_add'")
    assert "203.0.113.7" not in str(audit)
    _seq, lists = write(url, lambda cur: rule_sets.load_lists(cur, KEY))
    now = datetime.now(UTC).timestamp()
    assert lists["bad_ips"].contains("203.0.113.7", now)
    assert lists["bad_ips"].contains("", now, ip_hash("203.0.113.7", KEY))
    assert not lists["bad_ips"].contains("203.0.113.8", now)
    # The CLI shows the hash masked; it removes an address given again.
    monkeypatch.setenv("FRAUDOPS_IP_HASH_KEY", KEY)
    assert rule_sets.main(["--database-url", url, "list-show", "bad_ips"]) == 0
    shown = capsys.readouterr().out
    assert shown_value(hashed) in shown and hashed not in shown and "203.0.113" not in shown
    assert rule_sets.main(["--database-url", url, "list-remove", "bad_ips", "203.0.113.7",
                           "--by", "bob", "--reason", "cleared"]) == 0  # fmt: skip
    assert "removed 1" in capsys.readouterr().out


def test_addresses_kept_as_given_are_hashed_and_serving_follows(core, url):
    """A list written before addresses were hashed (a /32 as given, in the items and the
    change log): the first writer with the key hashes them, and a running scoring process
    reads the list anew, still matching the address."""
    core.rules._hash_key = KEY  # as a scorer started with FRAUDOPS_IP_HASH_KEY
    write(url, lambda cur: rule_sets.create_list(cur, "bad_ips", "ip", "alice", "case 7"))
    write(url, lambda cur: rule_sets.add_items(cur, "bad_ips", ["10.9.0.0/16"], "alice", "x"))
    old = (
        "INSERT INTO rule_list_items (list_name, value, added_by, reason) VALUES "
        "('bad_ips', '203.0.113.7/32', 'alice', 'old'); INSERT INTO rule_list_changes "
        "(list_name, kind, value, op) VALUES ('bad_ips', 'ip', '203.0.113.7/32', 'add')"
    )
    write(url, lambda cur: cur.execute(old))
    publish_backtested(url, Rule("ips", "block", "in_list('bad_ips', ip_address)"))
    wait_until(lambda: len(core.rules.current) == 1, "the rule set to load", 10)
    scored = txs("ip", 1, ip_address="203.0.113.7")
    assert core.score(scored).decided_by == ["ips"]
    version = core.rules.current.version
    assert write(url, lambda cur: rule_sets.hash_stored_addresses(cur, KEY)) == 1
    hashed = HASH_PREFIX + ip_hash("203.0.113.7", KEY)
    assert sorted(set(stored_values(url))) == sorted(["10.9.0.0/16", hashed])
    wait_until(lambda: core.rules.current.version != version, "the reset list to load", 10)
    assert core.rules.current.lists["bad_ips"].items.keys() == {"10.9.0.0/16", hashed}
    assert core.score(txs("ip2", 1, ip_address="203.0.113.7")).decided_by == ["ips"]
    assert core.score(txs("ip3", 1, ip_address="203.0.113.8")).decided_by == ["model"]
    assert write(url, lambda cur: rule_sets.hash_stored_addresses(cur, KEY)) == 0


def test_a_list_read_by_a_served_rule_is_not_deleted(core, url, capsys):
    write(url, lambda cur: rule_sets.create_list(cur, "blocked_users", "user", "alice", "c"))
    write(url, lambda cur: rule_sets.add_items(cur, "blocked_users", ["4242"], "alice", "c"))
    publish_backtested(url, Rule("blocked", "block", "in_list('blocked_users', user_id)"))
    publish_backtested(url, Rule("watch", "review", "in_list(\"blocked_users\", dest_id)"),
                       "shadow", 2)  # fmt: skip
    write(
        url,
        lambda cur: rule_sets.save_rule(
            cur, Rule("idea", "block", "in_list('blocked_users', dest_id)"), 3, "bob", "draft"
        ),
    )
    wait_until(lambda: len(core.rules.current) == 2, "the rule set to load", 10)
    with pytest.raises(RuleError, match="read by the live or shadow rule.s. blocked, watch:"):
        write(url, lambda cur: rule_sets.delete_list(cur, "blocked_users", "bob", "unused"))
    base = ["--database-url", url]
    assert rule_sets.main([*base, "list-delete", "blocked_users", "--by", "bob",
                           "--reason", "unused"]) == 2  # fmt: skip
    assert "blocked, watch" in capsys.readouterr().err
    write(url, lambda cur: rule_sets.publish(cur, "blocked", "off", "bob", "retired"))
    write(url, lambda cur: rule_sets.publish(cur, "watch", "draft", "bob", "retired"))
    assert rule_sets.main([*base, "list-delete", "blocked_users", "--by", "bob",
                           "--reason", "case closed"]) == 0  # fmt: skip
    assert "deleted list blocked_users (1 items)" in capsys.readouterr().out
    assert query(url, "SELECT count(*) FROM rule_list_items") == [(0,)]
    audit = query(url, "SELECT detail->>'by', detail->>'reason', detail->>'items' FROM "
                  "audit_log WHERE kind = 'list_delete'")  # fmt: skip
    assert audit == [("bob", "case closed", "1")]
    wait_until(lambda: "blocked_users" not in core.rules.current.lists, "the list dropped", 10)
    # The name again, another kind: a running process serves the new list, not the old items.
    write(url, lambda cur: rule_sets.create_list(cur, "blocked_users", "country", "bob", "new"))
    wait_until(lambda: "blocked_users" in core.rules.current.lists, "the new list", 10)
    index = core.rules.current.lists["blocked_users"]
    assert (index.kind, index.items) == ("country", {})
    with pytest.raises(RuleError, match="no list named"):
        write(url, lambda cur: rule_sets.delete_list(cur, "nope", "bob", "typo"))
