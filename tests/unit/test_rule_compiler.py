"""The compiled rule set (fraudops.rule_compiler) against the CEL interpreter it stands in
for: on generated conditions and rows (edge values among them), whenever the compiled
function answers it answers what the interpreter does; where Python and the interpreter
differ, the compiled code follows the interpreter or leaves the case to it."""

from __future__ import annotations

import ast
import math
import random

import cel
import numpy as np
import pytest

from fraudops.features import N_FEATURES
from fraudops.rule_compiler import compile_rules
from fraudops.rules import MODEL, Rule, RuleSet

KINDS = {
    "user_id": "int", "timestamp": "int", "amount": "double", "score": "double",
    "type": "string", "channel": "string", "balances_missing": "bool", "in_list_member_0": "bool",
}  # fmt: skip
EDGE = {
    "int": [0, 1, -1, 7, 2**53 + 1, 2**62, 2**63 - 1, -(2**63)],
    "double": [0.0, -0.0, 0.5, 7.0, 1e308, -1e308, 2.0**53, math.nan, math.inf, -math.inf],
    "string": ["", "web", "TRANSFER", "é", "a\U0001f600", "We"],
    "bool": [True, False],
}
LITERALS = {
    "int": ["0", "1", "7", "9007199254740993", "9223372036854775807", "-5"],
    "double": ["0.0", "0.5", "7.0", "1e308", "9007199254740992.0", "2.5e-3"],
    "string": ["''", "'web'", '"TRANSFER"', "'é'", "'We'"],
    "bool": ["true", "false"],
}


def leaf(rng: random.Random, kind: str) -> str:
    names = [n for n, k in KINDS.items() if k == kind]
    return rng.choice(names) if rng.random() < 0.6 else rng.choice(LITERALS[kind])


def value(rng: random.Random, kind: str, depth: int) -> str:
    """An expression of `kind` (sometimes of CEL the compiler leaves to the interpreter)."""
    if depth <= 0 or rng.random() < 0.4:
        return leaf(rng, kind)
    if kind == "string":
        return f"{value(rng, 'string', depth - 1)} + {leaf(rng, 'string')}"
    if kind == "int" and rng.random() < 0.3:
        return f"size({value(rng, 'string', depth - 1)})"
    operator = rng.choice("+-*/%" if kind == "int" else "+-*/")
    other = kind if rng.random() < 0.9 else rng.choice(["int", "double"])
    left = f"-{leaf(rng, kind)}" if rng.random() < 0.1 else value(rng, kind, depth - 1)
    return f"({left} {operator} {value(rng, other, depth - 1)})"


def condition(rng: random.Random, depth: int) -> str:
    roll = rng.random()
    if depth <= 0 or roll < 0.35:
        return atom(rng, depth)
    if roll < 0.75:
        joiner = rng.choice([" && ", " || "])
        return f"({condition(rng, depth - 1)}{joiner}{condition(rng, depth - 1)})"
    if roll < 0.87:
        return f"!{condition(rng, depth - 1)}"
    return f"({condition(rng, depth - 1)} ? {condition(rng, 0)} : {condition(rng, 0)})"


def atom(rng: random.Random, depth: int) -> str:
    roll = rng.random()
    if roll < 0.15:
        return leaf(rng, "bool")
    if roll < 0.55:
        left, right = rng.choice([("int", "int"), ("double", "double"), ("int", "double"),
                                  ("string", "string"), ("bool", "bool")])  # fmt: skip
        operator = rng.choice(["==", "!=", "<", "<=", ">", ">="])
        return f"{value(rng, left, depth)} {operator} {value(rng, right, depth)}"
    if roll < 0.7:
        test = rng.choice(["contains", "startsWith", "endsWith"])
        return f"{value(rng, 'string', depth)}.{test}({leaf(rng, 'string')})"
    if roll < 0.85:
        kind = rng.choice(["int", "double", "string"])
        items = ", ".join(rng.sample(LITERALS[kind], 3))
        return f"{value(rng, kind, depth)} in [{items}]"
    return rng.choice(["type.matches('^T')", "int(amount) > 3", "[1, 2].exists(x, x == user_id)",
                       "has(type)", "channel == 'w\\x65b'", "user_id / 2 > 3"])  # fmt: skip


def row(rng: random.Random) -> dict:
    return {name: rng.choice(EDGE[kind]) for name, kind in KINDS.items()}


def interpreted(program, values) -> tuple[str, object]:
    try:
        return "value", program.execute(values)
    except Exception as err:  # noqa: BLE001 - any interpreter error is an outcome to compare
        return "error", type(err).__name__


def test_the_compiled_answer_is_the_interpreters_on_generated_conditions():
    rng = random.Random(20261207)
    texts, compiled_count, compared = [], 0, 0
    while len(texts) < 600:
        text = condition(rng, 3)
        try:
            program = cel.compile(text)
            if not isinstance(program.execute(row(rng)), bool):
                continue
        except Exception:  # noqa: BLE001 - generated text the interpreter refuses
            continue
        texts.append((text, program))
    for text, program in texts:
        function = compile_rules([text], [True], ["r"], KINDS)
        if function.interpreted:
            continue
        compiled_count += 1
        for _ in range(25):
            values = row(rng)
            outcome = interpreted(program, values)
            try:
                first, _ = function.run(values, None)
            except Exception:  # noqa: BLE001 - the caller then asks the interpreter
                continue
            compared += 1
            assert outcome == ("value", first == 0), (text, values, function.source)
    assert compiled_count > 250, "the compiler took too few of the generated conditions"
    assert compared > 2500


@pytest.mark.parametrize(
    ("text", "values", "answer"),
    [
        ("user_id == 9007199254740992.0", {"user_id": 2**53 + 1}, True),  # compared as doubles
        ("size(type) == 6", {"type": "héllo"}, True),  # UTF-8 bytes, as the interpreter counts
        ("type.size() > 5", {"type": "héllo"}, True),
        ("!(amount < 1.0)", {"amount": 5.0}, True),
        ("amount * 2.0 > 1.0", {"amount": 1.0}, True),
    ],
)
def test_where_python_differs_the_compiled_code_follows_the_interpreter(text, values, answer):
    kinds = {"user_id": "int", "type": "string", "amount": "double"}
    function = compile_rules([text], [True], ["r"], kinds)
    assert not function.interpreted
    assert (function.run(values, None)[0] == 0) is answer
    assert cel.compile(text).execute(values) is answer


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("user_id * 2 > 0", {"user_id": 2**62}),  # the interpreter: overflow
        ("!(amount < 1.0)", {"amount": math.nan}),  # the interpreter cannot order a NaN
        ("(amount - amount) * 0.0 < 1.0", {"amount": math.inf}),
        ("1.0 / amount > 0.0", {"amount": 0.0}),  # the interpreter: inf
    ],
)
def test_where_python_would_answer_otherwise_the_compiled_code_raises(text, values):
    function = compile_rules([text], [True], ["r"], {"user_id": "int", "amount": "double"})
    assert not function.interpreted
    with pytest.raises((OverflowError, ValueError, ZeroDivisionError)):
        function.run(values, None)


@pytest.mark.parametrize(
    "text",
    [
        "type.matches('^T')", "int(amount) > 3.0", "[1, 2].exists(x, x == user_id)",
        "has(row.type)", "type == 'w\\x65b'", "type == r'web'", "type == '''web'''",
        "user_id / 2 > 3", "user_id % 2 == 1", "-user_id < 0", "amount > 1.0 ? 1 : 2.0",
        "user_id in [1, 2.0]", "amount + 1 > 2.0", "0x10 == user_id", "3u == 3u",
        "(" * 45 + "amount > 1.0" + ")" * 45,
        "in_list('blocked', string(user_id))",
    ],
)  # fmt: skip
def test_what_the_compiler_does_not_take_is_left_to_the_interpreter(text):
    kinds = {"user_id": "int", "type": "string", "amount": "double", "row": "string"}
    assert compile_rules([text], [True], ["r"], kinds).interpreted == {0}


def test_rule_text_reaches_the_source_only_as_names_and_constants():
    text = 'type == \'__import__("os").system("x")\' || channel.contains(\'"); x("\')'
    function = compile_rules([text], [True], ["r"], {"type": "string", "channel": "string"})
    assert not function.interpreted
    assert function.run({"type": '__import__("os").system("x")', "channel": ""}, None)[0] == 0
    calls = [node.func for node in ast.walk(ast.parse(function.source))
             if isinstance(node, ast.Call)]  # fmt: skip
    assert {getattr(f, "id", None) or f.attr for f in calls} <= {"ValueError", "interpret"}
    constants = {
        n.value for n in ast.walk(ast.parse(function.source)) if isinstance(n, ast.Constant)
    }
    assert {'__import__("os").system("x")', '"); x("'} <= constants


def test_a_set_mixing_compiled_and_interpreted_rules_keeps_its_order():
    rules = [
        Rule("regex", "block", "type.matches('^TRANS')"),  # interpreted
        Rule("amount", "review", "amount > 100.0"),  # compiled
        Rule("watch", "review", "[1.0, 2.0].exists(x, amount == x)", mode="shadow"),
        Rule("small", "allow", "amount < 5.0", mode="shadow"),
    ]
    rule_set = RuleSet("t", rules, {})
    assert rule_set._compiled.interpreted == {0, 2}
    txs = [{"type": "TRANSFER", "amount": 500.0}, {"type": "PAYMENT", "amount": 500.0},
           {"type": "PAYMENT", "amount": 2.0}, {"type": "PAYMENT", "amount": 50.0}]  # fmt: skip
    out = rule_set.decide(txs, np.zeros((4, N_FEATURES)), np.zeros(4), np.zeros(4, dtype=int))
    assert out.decided_by == ["regex", "amount", MODEL, MODEL]
    assert out.shadow == [None, None, ["watch", "small"], None]


def test_many_terms_side_by_side_are_not_nesting():
    text = " && ".join(["!(amount > 1.0)"] * 300)
    assert not compile_rules([text], [True], ["r"], {"amount": "double"}).interpreted
    deep = "!" * 1500 + "true"
    assert compile_rules([deep], [True], ["r"], {}).interpreted == {0}
