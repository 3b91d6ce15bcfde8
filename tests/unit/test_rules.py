"""The rule language and its evaluation (fraudops.rules): every action, every kind of field,
lists of every kind with expiry, first match wins, shadow rules, hostile rule text."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from fraudops.features import FEATURE_NAMES, N_FEATURES
from fraudops.geoip import ip_hash
from fraudops.rules import (
    HASH_PREFIX,
    MAX_CONDITION_CHARS,
    MODEL,
    ListIndex,
    Rule,
    RuleError,
    RuleSet,
    canonical_value,
    check_condition,
    lists_read,
    lookups_as_variables,
    shown_value,
)

NOW = 1_800_000_000.0
LISTS = {
    "blocked_users": ListIndex.build("user", [("7", math.inf), ("8", NOW - 1), ("9", NOW + 60)]),
    "vip_customers": ListIndex.build("customer", [("cus_vip", math.inf)]),
    "bad_networks": ListIndex.build(
        "ip", [("10.1.0.0/16", math.inf), ("2001:db8::1/128", math.inf)]
    ),
    "risky_countries": ListIndex.build("country", [("KP", math.inf)]),
}


def tx(**fields) -> dict:
    base = {
        "transaction_id": "t-1", "user_id": 1, "timestamp": 1_700_000_000, "type": "PAYMENT",
        "amount": 20.0, "old_balance_orig": 100.0, "new_balance_orig": 80.0,
        "old_balance_dest": 0.0, "new_balance_dest": 20.0, "is_unauthorized_overdraft": 0.0,
        "dest_id": 3, "channel": "web", "balances_missing": False,
        "stripe_payment_intent_id": "", "stripe_charge_id": "", "stripe_customer_id": "",
    }  # fmt: skip
    return {**base, **fields}


@pytest.fixture(params=["compiled", "interpreter only"], autouse=True)
def evaluation(request, monkeypatch):
    """Every test here runs on the compiled set and on the CEL interpreter alone."""
    monkeypatch.setattr(sys.modules[__name__], "INTERPRETER_ONLY", request.param != "compiled")


INTERPRETER_ONLY = False


def decide(rules: list[Rule], txs: list[dict], scores=None, bands=None, features=None):
    n = len(txs)
    features = np.zeros((n, N_FEATURES), dtype=np.float32) if features is None else features
    scores = np.full(n, 0.1) if scores is None else np.asarray(scores, dtype=float)
    bands = np.zeros(n, dtype=np.int64) if bands is None else np.asarray(bands)
    rule_set = RuleSet("t", rules, LISTS, interpreter_only=INTERPRETER_ONLY)
    return rule_set.decide(txs, features, scores, bands, now=NOW)


@pytest.mark.parametrize(("action", "band"), [("allow", 0), ("review", 1), ("block", 2)])
def test_each_action_sets_its_band_and_names_the_rule(action, band):
    out = decide([Rule("r", action, "amount > 10.0")], [tx()], bands=[1])
    assert out.bands.tolist() == [band]
    assert out.decided_by == ["r"]


def test_without_a_match_the_model_band_stands():
    out = decide([Rule("r", "block", "amount > 1000.0")], [tx()], bands=[1])
    assert out.bands.tolist() == [1]
    assert out.decided_by == [MODEL]


def test_an_empty_set_leaves_the_batch_alone():
    assert RuleSet("t", [], {}).decide([tx()], np.zeros((1, N_FEATURES)), np.zeros(1),
                                       np.zeros(1, dtype=int)) is None  # fmt: skip


@pytest.mark.parametrize(
    ("condition", "fields"),
    [
        ("type == 'TRANSFER'", {"type": "TRANSFER"}),  # text
        ("user_id == 42", {"user_id": 42}),  # integer
        ("amount >= 5000.0 && amount < 6000", {"amount": 5000.0}),  # double, mixed with int
        ("balances_missing", {"balances_missing": True}),  # boolean
        ("channel.startsWith('po')", {"channel": "pos"}),  # a string function
        ("stripe_customer_id.matches('^cus_[0-9]+$')", {"stripe_customer_id": "cus_12"}),
        ("timestamp > 1600000000 && dest_id != 0", {}),
        ("type in ['CASH_OUT', 'TRANSFER']", {"type": "CASH_OUT"}),
        ("[1000.0, 2000.0].exists(x, amount == x)", {"amount": 2000.0}),
    ],
)
def test_transaction_fields_of_every_kind(condition, fields):
    rules = [Rule("r", "review", condition)]
    assert decide(rules, [tx(**fields)]).decided_by == ["r"]
    if fields:
        assert decide(rules, [tx()]).decided_by == [MODEL]


def test_features_velocity_score_and_model_band():
    features = np.zeros((2, N_FEATURES), dtype=np.float32)
    features[0, FEATURE_NAMES.index("tx_count_1h")] = 6
    features[0, FEATURE_NAMES.index("log_amount_sum_24h")] = np.log1p(12_000)
    rules = [
        Rule("velocity", "block", "tx_count_1h > 5.0 && amount_sum_24h > 11999.0"),
        Rule("score", "review", "score > 0.8 && model_band == 'BLOCK'"),
    ]
    out = decide(rules, [tx(), tx()], scores=[0.1, 0.9], bands=[0, 2], features=features)
    assert out.decided_by == ["velocity", "score"]
    assert out.bands.tolist() == [2, 1]


def test_the_first_matching_live_rule_decides_and_shadow_rules_only_record():
    rules = [
        Rule("watch", "block", "amount > 10.0", mode="shadow"),
        Rule("first", "allow", "amount > 10.0"),
        Rule("second", "block", "amount > 10.0"),
        Rule("draft", "block", "amount > 10.0", mode="draft"),
    ]
    out = decide(rules, [tx(), tx(amount=5.0)], bands=[2, 2])
    assert out.decided_by == ["first", MODEL]
    assert out.bands.tolist() == [0, 2]
    assert out.shadow == [["watch"], None]


@pytest.mark.parametrize(
    ("condition", "fields", "matches"),
    [
        ("in_list('blocked_users', user_id)", {"user_id": 7}, True),
        ("in_list('blocked_users', user_id)", {"user_id": 8}, False),  # expired
        ("in_list('blocked_users', user_id)", {"user_id": 9}, True),  # expires later
        ("in_list('blocked_users', user_id)", {"user_id": 10}, False),
        ("in_list('vip_customers', stripe_customer_id)", {"stripe_customer_id": "cus_vip"}, True),
        ("in_list('bad_networks', '10.1.200.3')", {}, True),
        ("in_list('bad_networks', '10.2.0.1')", {}, False),
        ("in_list('bad_networks', '2001:db8::1')", {}, True),
        ("in_list('bad_networks', 'not an ip')", {}, False),
        ("in_list('risky_countries', 'kp')", {}, True),
    ],
)
def test_lists_of_every_kind_with_expiry(condition, fields, matches):
    out = decide([Rule("r", "block", condition)], [tx(**fields)])
    assert out.decided_by == (["r"] if matches else [MODEL])


@pytest.mark.parametrize(
    ("kind", "value", "stored"),
    [("user", " 0042", "42"), ("country", "de", "DE"), ("ip", "10.1.2.3/16", "10.1.0.0/16"),
     ("ip", "::1", HASH_PREFIX + ip_hash("::1", "k")),
     ("ip", "10.1.2.3/32", HASH_PREFIX + ip_hash("10.1.2.3", "k")),
     ("ip", HASH_PREFIX + "0" * 32, HASH_PREFIX + "0" * 32), ("customer", "cus_1", "cus_1")],
)  # fmt: skip
def test_list_values_are_stored_in_one_form(kind, value, stored):
    assert canonical_value(kind, value, "k") == stored


def test_a_single_ip_address_is_stored_only_as_its_keyed_hash():
    with pytest.raises(RuleError, match="FRAUDOPS_IP_HASH_KEY"):
        canonical_value("ip", "203.0.113.7")
    assert canonical_value("ip", "203.0.113.0/24") == "203.0.113.0/24"  # a network stays
    hashed = canonical_value("ip", "203.0.113.7", "k")
    assert "203" not in hashed and hashed != canonical_value("ip", "203.0.113.7", "other")
    assert shown_value(hashed) == hashed[: len(HASH_PREFIX) + 8] + "…"
    assert shown_value("203.0.113.0/24") == "203.0.113.0/24"


@pytest.mark.parametrize(
    ("fields", "matches"),
    [
        ({"ip_address": "203.0.113.7"}, True),  # hashed here, with the list's key
        ({"ip_address": "203.0.113.8"}, False),
        ({"ip_address": "", "ip_hash": ip_hash("203.0.113.7", "k")}, True),  # a stored score
        ({"ip_address": "203.0.113.8", "ip_hash": ip_hash("203.0.113.8", "k")}, False),
        ({"ip_address": "198.51.100.9"}, True),  # in a network
        ({"ip_address": "192.0.2.1"}, True),  # kept as given before hashing: still matches
        ({"ip_address": "192.0.2.5"}, True),  # hashed, expires later
        ({"ip_address": "192.0.2.6"}, False),  # hashed, expired
        ({"ip_address": "not an ip"}, False),
    ],
)
def test_an_ip_list_matches_hashed_addresses_and_networks(fields, matches):
    items = [(canonical_value("ip", v, "k"), expiry) for v, expiry in
             [("203.0.113.7", math.inf), ("198.51.100.0/24", math.inf),
              ("192.0.2.5", NOW + 60), ("192.0.2.6", NOW - 1)]]  # fmt: skip
    lists = {"bad_ips": ListIndex.build("ip", [*items, ("192.0.2.1/32", math.inf)], "k")}
    rules = [
        Rule("ips", "block", "in_list('bad_ips', ip_address)"),
        Rule("ips_called", "review", "in_list('bad_ips', string(ip_address))", "shadow"),
    ]
    one = [tx(**fields)]
    out = RuleSet("t", rules, lists).decide(one, np.zeros((1, N_FEATURES)), np.zeros(1),
                                            np.zeros(1, dtype=int), now=NOW)  # fmt: skip
    assert out.decided_by == (["ips"] if matches else [MODEL])
    # Called back from CEL (no hash at hand), an address is hashed with the list's key.
    if fields["ip_address"]:
        assert out.shadow == ([["ips_called"]] if matches else [None])


def test_the_lists_a_condition_reads():
    text = "in_list('a', user_id) || in_list(\"b\", ip_address) && !in_list('a', ip_country)"
    assert lists_read(text) == {"a", "b"}


@pytest.mark.parametrize(
    ("kind", "value"), [("user", "-1"), ("user", "x"), ("country", "DEU"), ("ip", "1.2.3"),
                        ("customer", "a\x00b"), ("planet", "x")],
)  # fmt: skip
def test_bad_list_values_are_refused(kind, value):
    with pytest.raises(RuleError):
        canonical_value(kind, value)


def test_a_rule_failing_at_run_time_matches_nothing_and_the_next_decides():
    rules = [Rule("divides", "block", "100 / (dest_id - 3) > 1"),
             Rule("next", "review", "amount > 1.0")]  # fmt: skip
    out = decide(rules, [tx()])
    assert out.decided_by == ["next"]
    assert out.errors == 1


KINDS = {name: index.kind for name, index in LISTS.items()}


@pytest.mark.parametrize(
    ("condition", "problem", "position"),
    [
        ("amount >", "Syntax error", (1, 9)),
        ("amount > 1.0 &&\n  (type == ", "Syntax error", (2, 12)),
        ("amont > 1.0", "unknown name 'amont'", (1, 1)),
        ("amount > 1.0 && system('ls')", "unknown function 'system'", (1, 17)),
        ("in_list('nope', user_id)", "no list named 'nope'", (1, 1)),
        ("in_list(user_id, user_id)", "list name in quotes", (1, 1)),
        ("amount > 'x'", "No such overload", None),
        ("amount + 1.0", "must be true or false", None),
        ("", "non-empty", None),
    ],
)
def test_a_rule_that_does_not_compile_is_refused_with_its_position(condition, problem, position):
    with pytest.raises(RuleError) as err:
        check_condition(condition, KINDS)
    assert problem in str(err.value)
    assert err.value.position == position


@pytest.mark.parametrize(
    ("condition", "problem"),
    [
        ("amount > 1.0 || " * 200 + "true", f"longer than {MAX_CONDITION_CHARS}"),
        ("(" * 40 + "true" + ")" * 40, "nests brackets deeper"),
        ("[" * 30 + "]" * 30 + " == []", "nests brackets deeper"),
        ("!" * 1500 + "true", None),  # deep without brackets: CEL's own recursion limit
        ("[1,2,3].all(x, [1,2,3].all(y, [1,2,3].all(z, x * y * z > 0)))", "comprehension"),
        ("[1,2].map(x, x).exists(y, y > 0) && [1].all(z, z > 0)", "comprehension"),
        ("amount > 1.0\x00", "control characters"),
        ("'\\u0000' == type", None),
    ],
)
def test_hostile_rule_text_is_refused(condition, problem):
    try:
        check_condition(condition, KINDS)
    except RuleError as err:
        assert problem is None or problem in str(err)
    else:
        assert problem is None, "hostile text accepted"


def test_a_set_with_one_broken_rule_is_refused_whole():
    with pytest.raises(RuleError) as err:
        RuleSet("t", [Rule("good", "block", "amount > 1.0"), Rule("bad", "block", "amount >")], {})
    assert err.value.field == "rules[bad].condition"


def test_lookups_of_plain_names_become_variables_and_nothing_else_does():
    texts, members = lookups_as_variables([
        "in_list('blocked_users', user_id) && in_list(\"vip_customers\", stripe_customer_id)",
        "channel == \"in_list('blocked_users', user_id)\" || in_list('blocked_users', user_id)",
        "in_list('bad_networks', '10.1.0.1') || in_list('blocked_users', int(dest_id))",
        "[7, 8].exists(user_id, in_list('blocked_users', user_id))",
        "in_list('blocked_users', user_id) && channel != '\\\\'",
    ])  # fmt: skip
    assert members == {"in_list_member_0": ("blocked_users", "user_id"),
                       "in_list_member_1": ("vip_customers", "stripe_customer_id")}  # fmt: skip
    assert texts[0] == "in_list_member_0 && in_list_member_1"
    assert texts[1] == "channel == \"in_list('blocked_users', user_id)\" || in_list_member_0"
    assert texts[2:] == [
        "in_list('bad_networks', '10.1.0.1') || in_list('blocked_users', int(dest_id))",
        "[7, 8].exists(user_id, in_list('blocked_users', user_id))",
        "in_list('blocked_users', user_id) && channel != '\\\\'",
    ]


@pytest.mark.parametrize("user_id", [7, 8, 9, 10])
def test_a_lookup_answers_the_same_as_a_variable_and_as_a_call(user_id):
    """The same lookup, made before the evaluation (plain name) and called back (an
    expression), in one set, shadow rules among them: the same answers."""
    rules = [
        Rule("as_call", "review", "in_list('blocked_users', int(user_id))", "shadow"),
        Rule("as_variable", "block", "in_list('blocked_users', user_id) && amount > 1.0"),
    ]
    out = decide(rules, [tx(user_id=user_id)])
    listed = LISTS["blocked_users"].contains(user_id, NOW)
    assert out.decided_by == (["as_variable"] if listed else [MODEL])
    assert out.shadow == ([["as_call"]] if listed else [None])


@pytest.mark.parametrize("nested", [0, 80])
def test_first_match_among_many_rules_and_shadow_rules_anywhere(nested):
    """Sixty rules, shallow or each nesting 80 conditionals (too deep for the compiler: left
    to the interpreter): the first live match decides and every shadow match is recorded."""
    deep = "amount>{0}.0?true:" * nested + "amount>{0}.0"
    rules = [Rule(f"r{i}", "review", deep.format(1000 + i)) for i in range(60)]
    rules[37] = Rule("r37", "block", deep.format(10))
    rules[50] = Rule("r50", "allow", deep.format(1))
    rules[5] = Rule("s5", "review", deep.format(1), mode="shadow")
    rules[58] = Rule("s58", "review", deep.format(15), mode="shadow")
    out = decide(rules, [tx(amount=20.0), tx(amount=12.0), tx(amount=5.0), tx(amount=0.5)])
    assert out.decided_by == ["r37", "r37", "r50", MODEL]
    assert out.bands.tolist() == [2, 2, 0, 0]
    assert out.shadow == [["s5", "s58"], ["s5"], ["s5"], None]
