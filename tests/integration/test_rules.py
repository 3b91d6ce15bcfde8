"""Rules and lists in Postgres and their hot swap into a scoring core: edits audited with who
and why, publishing gated on a backtest, the stored score naming what decided, and a version
switch under load with no failed call and no mixed version inside one batch."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from fraudops import rule_sets
from fraudops.db import connect
from fraudops.rules import Rule, RuleError
from fraudops.schema import proto_to_dict
from serving.model_store import ModelStore
from serving.persistence import ScoreWriter
from serving.rule_store import RuleStore
from serving.scoring import ScoringCore
from testkit.stack import fresh_database
from tests.helpers.serving_env import publish_model, query, transaction, unique_ids, wait_until

WEEK = (datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 1, 8, tzinfo=UTC))


@pytest.fixture
def url(postgres_server_url):
    with fresh_database(postgres_server_url, "fraudops_rules") as url:
        yield url


def write(url: str, work):
    conn = connect(url)
    try:
        with conn, conn.cursor() as cur:
            return work(cur)
    finally:
        conn.close()


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
