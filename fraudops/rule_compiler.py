"""A served rule set's conditions compiled to one Python function, for the part of CEL that
fraud rules are written in: comparisons, `&&` `||` `!` `?:`, arithmetic, the string tests,
`in` over a literal list, and list lookups made before the evaluation.

Why: the CEL interpreter costs ~0.2 µs a rule and ~5 µs to be handed a transaction's values,
so 100 rules cost a scored transaction ~25 µs warm and ~45 µs inside a request; the same
conditions as Python bytecode cost tens of nanoseconds a rule. CEL stays the language: the
`cel` package parses and checks every condition before it is served
(fraudops.rules.check_condition), evaluates the conditions this compiler does not take
(macros, `matches`, `has`, conversions, escapes in strings, integer division, ...), and
whenever the compiled function raises (a division by zero, an integer overflow, a NaN
ordered, a value of an unexpected type) the transaction is evaluated by the interpreter
instead. The compiled code follows the interpreter where Python differs from it, and the
unit tests run both side by side on generated conditions: an integer compared with a double
is compared as a double, `size` counts UTF-8 bytes, an integer overflow is an error, a NaN
cannot be ordered.

Nothing of a rule's text reaches the generated source but names of known variables
(as `v_<name>`), constants written with repr() and operators from fixed tables."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

INT64 = (-(2**63), 2**63 - 1)
MAX_NESTING = 40  # deeper conditions stay with the interpreter (Python's parser has limits)
_TOKEN = re.compile(
    r"""(?P<space>\s+|//[^\n]*)
    |(?P<double>\d+\.\d+(?:[eE][+-]?\d+)?(?![\w.])|\d+[eE][+-]?\d+(?![\w.]))
    |(?P<int>\d+(?![\w.]))
    |(?P<string>'[^'\\\n]*'(?!')|"[^"\\\n]*"(?!"))
    |(?P<name>[A-Za-z_]\w*)
    |(?P<op>&&|\|\||==|!=|<=|>=|[<>!+\-*/?:()\[\],.])""",
    re.VERBOSE,
)
KINDS = {bool: "bool", int: "int", float: "double", str: "string"}
_ORDER = ("<", "<=", ">", ">=")
_STRING_TESTS = {"contains": "({arg} in {target})", "startsWith": "{target}.startswith({arg})",
                 "endsWith": "{target}.endswith({arg})"}  # fmt: skip


class Unsupported(Exception):
    """The condition uses CEL this compiler does not take: the interpreter evaluates it."""


@dataclass(frozen=True)
class Expr:
    code: str
    kind: str  # bool, int, double, string, or list:<kind> for a literal list
    value: Any = None  # the constant, when it is one
    constant: bool = False


def _int64(value: int) -> int:
    if not INT64[0] <= value <= INT64[1]:
        raise OverflowError("integer overflow")
    return value


def _ordered(value: float) -> float:
    if value != value:
        raise ValueError("NaN cannot be ordered")
    return value


class _Parser:
    """Recursive descent over CEL's grammar (cel-spec's langdef), giving Python source and
    each subexpression's kind; raises Unsupported for anything outside the subset."""

    def __init__(self, text: str, kinds: Mapping[str, str], constants: dict[str, Any]):
        self.tokens = _tokens(text)
        self.at = 0
        self.depth = 0
        self.kinds = kinds
        self.constants = constants
        self.names: set[str] = set()

    def parse(self) -> Expr:
        expr = self.expr()
        if self.at != len(self.tokens):
            raise Unsupported("trailing tokens")
        if expr.kind != "bool":
            raise Unsupported("not a boolean")
        return expr

    def peek(self) -> str | None:
        return self.tokens[self.at][1] if self.at < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.at == len(self.tokens):
            raise Unsupported("unexpected end")
        token = self.tokens[self.at]
        if expected is not None and token[1] != expected:
            raise Unsupported(f"expected {expected}")
        self.at += 1
        return token

    def deeper(self) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise Unsupported("nested too deeply")

    def expr(self) -> Expr:
        self.deeper()
        condition = self.logical("||", self.conjunction)
        if self.peek() == "?":
            self.take()
            then = self.logical("||", self.conjunction)
            self.take(":")
            otherwise = self.expr()
            _need(condition, "bool")
            if then.kind != otherwise.kind or then.kind.startswith("list"):
                raise Unsupported("branches of different kinds")
            condition = Expr(f"({then.code} if {condition.code} else {otherwise.code})", then.kind)
        self.depth -= 1
        return condition

    def conjunction(self) -> Expr:
        return self.logical("&&", self.relation)

    def logical(self, operator: str, operand: Callable[[], Expr]) -> Expr:
        """A run of `&&` (or `||`) as one flat Python `and` (or `or`): no nesting to grow."""
        terms = [operand()]
        while self.peek() == operator:
            self.take()
            terms.append(operand())
        if len(terms) == 1:
            return terms[0]
        for term in terms:
            _need(term, "bool")
        word = " or " if operator == "||" else " and "
        return Expr(f"({word.join(term.code for term in terms)})", "bool")

    def relation(self) -> Expr:
        left = self.arithmetic(("+", "-"), self.product)
        while self.peek() in ("==", "!=", *_ORDER, "in"):
            operator = self.take()[1]
            right = self.arithmetic(("+", "-"), self.product)
            left = self.membership(left, right) if operator == "in" else (
                _compare(operator, left, right))  # fmt: skip
        return left

    def membership(self, item: Expr, values: Expr) -> Expr:
        if values.kind != f"list:{item.kind}" or not values.constant:
            raise Unsupported("in over something other than a literal list of its kind")
        name = f"_c{len(self.constants)}"
        self.constants[name] = frozenset(values.value)
        return Expr(f"({item.code} in {name})", "bool")

    def product(self) -> Expr:
        return self.arithmetic(("*", "/", "%"), self.unary)

    def arithmetic(self, operators: tuple[str, ...], operand: Callable[[], Expr]) -> Expr:
        left = operand()
        while self.peek() in operators:
            operator = self.take()[1]
            left = _arithmetic(operator, left, operand())
        return left

    def unary(self) -> Expr:
        if self.peek() not in ("!", "-"):
            return self.member()
        self.deeper()
        operator = self.take()[1]
        operand = self.unary()
        self.depth -= 1
        if operator == "!":
            _need(operand, "bool")
            return Expr(f"(not {operand.code})", "bool")
        if operand.constant and operand.kind in ("int", "double"):
            return _constant(-operand.value)
        if operand.kind != "double":
            raise Unsupported("integer negation wraps in the interpreter")
        return Expr(f"(-{operand.code})", "double")

    def member(self) -> Expr:
        target = self.primary()
        while self.peek() == ".":
            self.take()
            method = self.take()
            if method[0] != "name" or self.peek() != "(":
                raise Unsupported("field selection")
            target = self.call(method[1], [target, *self.arguments()])
        return target

    def primary(self) -> Expr:
        kind, text = self.take()
        if kind == "int":
            return _constant(_int64(int(text)))
        if kind == "double":
            return _constant(float(text))
        if kind == "string":
            return _constant(text[1:-1])
        if kind == "name":
            if text in ("true", "false"):
                return _constant(text == "true")
            if self.peek() == "(":
                return self.call(text, self.arguments())
            return self.variable(text)
        if text == "(":
            inner = self.expr()
            self.take(")")
            return inner
        if text == "[":
            return self.literal_list()
        raise Unsupported(f"token {text!r}")

    def variable(self, name: str) -> Expr:
        if name not in self.kinds:
            raise Unsupported(f"name {name!r}")
        self.names.add(name)
        return Expr(f"v_{name}", self.kinds[name])

    def arguments(self) -> list[Expr]:
        self.take("(")
        return self.items(")")

    def items(self, closing: str) -> list[Expr]:
        """Expressions separated by commas up to `closing` (taken)."""
        found = []
        while self.peek() != closing:
            found.append(self.expr())
            if self.peek() != closing:
                self.take(",")
        self.take(closing)
        return found

    def literal_list(self) -> Expr:
        items = self.items("]")
        kinds = {item.kind for item in items}
        if len(kinds) != 1 or not all(item.constant for item in items):
            raise Unsupported("a list that is not of constants of one kind")
        return Expr("", f"list:{kinds.pop()}", [item.value for item in items], constant=True)

    def call(self, function: str, arguments: list[Expr]) -> Expr:
        if function == "size" and len(arguments) == 1 and arguments[0].kind == "string":
            return Expr(f"len({arguments[0].code}.encode())", "int")
        if function in _STRING_TESTS and len(arguments) == 2:
            target, argument = arguments
            if target.kind == argument.kind == "string":
                code = _STRING_TESTS[function].format(target=target.code, arg=argument.code)
                return Expr(f"({code})", "bool")
        raise Unsupported(f"function {function!r}")


def _tokens(text: str) -> list[tuple[str, str]]:
    found, at = [], 0
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None:
            raise Unsupported(f"character {text[at]!r}")
        if match.lastgroup != "space":
            found.append((match.lastgroup, match.group()))
        at = match.end()
    return found


def _constant(value: Any) -> Expr:
    if isinstance(value, float) and not math.isfinite(value):
        raise Unsupported("a literal out of a double's range")
    return Expr(repr(value), KINDS[type(value)], value, constant=True)


def _need(expr: Expr, kind: str) -> None:
    if expr.kind != kind:
        raise Unsupported(f"{expr.kind} where {kind} is needed")


def _compare(operator: str, left: Expr, right: Expr) -> Expr:
    kinds = {left.kind, right.kind}
    if kinds == {"int", "double"}:  # as the interpreter does: the integer as a double
        left, right = (_as_double(e) for e in (left, right))
    elif len(kinds) != 1 or left.kind.startswith("list"):
        raise Unsupported(f"{left.kind} {operator} {right.kind}")
    elif left.kind == "bool" and operator in _ORDER:
        raise Unsupported("booleans ordered")
    if operator in _ORDER and "double" in (left.kind, right.kind):
        left, right = _orderable(left), _orderable(right)
    return Expr(f"({left.code} {operator} {right.code})", "bool")


def _as_double(expr: Expr) -> Expr:
    if expr.kind == "double":
        return expr
    return _constant(float(expr.value)) if expr.constant else Expr(f"float({expr.code})", "double")


def _orderable(expr: Expr) -> Expr:
    """A double that may be NaN (anything but a constant or a variable, which are checked
    when read) is checked where it is ordered: the interpreter refuses to order a NaN."""
    if expr.constant or re.fullmatch(r"(float\()?v_\w+\)?", expr.code):
        return expr
    return Expr(f"_ordered({expr.code})", expr.kind)


def _arithmetic(operator: str, left: Expr, right: Expr) -> Expr:
    kind = left.kind
    if left.kind != right.kind:
        raise Unsupported("arithmetic on different kinds")
    if kind == "double" and operator in "+-*/":
        return Expr(f"({left.code} {operator} {right.code})", "double")
    if kind == "int" and operator in "+-*":
        return Expr(f"_int64({left.code} {operator} {right.code})", "int")
    if kind == "string" and operator == "+":
        return Expr(f"({left.code} + {right.code})", "string")
    raise Unsupported(f"{kind} {operator} {kind}")


@dataclass(frozen=True)
class Compiled:
    """The set's function and the positions of the conditions left to the interpreter.
    `run(row, interpret)` gives the first live rule that matched (-1: none) and the names of
    the shadow rules that matched (None: none); `interpret(k)` evaluates condition k."""

    run: Callable[[Mapping[str, Any], Callable[[int], bool]], tuple[int, list[str] | None]]
    interpreted: frozenset[int]
    source: str


def compile_rules(
    conditions: Sequence[str],
    live: Sequence[bool],
    names: Sequence[str],
    kinds: Mapping[str, str],
    interpreter_only: bool = False,
) -> Compiled:
    """`conditions` (list lookups already variables) as one function; `live[k]` whether
    condition k decides (else it is a shadow rule named `names[k]`); `kinds` the kind of
    each variable a condition may read. `interpreter_only` leaves every condition to the
    interpreter (the benchmark's comparison)."""
    constants: dict[str, Any] = {}
    codes, interpreted, read = [], set(), set()
    for k, text in enumerate(conditions):
        code = None if interpreter_only else _condition(text, kinds, constants, read)
        if code is None:
            interpreted.add(k)
            code = f"interpret({k})"
        codes.append(code)
    source = _source(codes, live, names, read, kinds)
    namespace = {"_int64": _int64, "_ordered": _ordered, "_names": tuple(names), **constants}
    exec(compile(source, "<rules>", "exec"), namespace)  # noqa: S102 - source built above
    return Compiled(namespace["run"], frozenset(interpreted), source)


def _condition(text: str, kinds, constants: dict[str, Any], read: set[str]) -> str | None:
    try:
        parser = _Parser(text, kinds, dict(constants))
        code = parser.parse().code
        compile(code, "<rule>", "eval")
    except (Unsupported, RecursionError, SyntaxError, MemoryError, ValueError, OverflowError):
        return None
    constants.update(parser.constants)
    read.update(parser.names)
    return code


def _source(codes, live, names, read: Collection[str], kinds) -> str:
    lines = ["def run(row, interpret):"]
    lines += [f"    v_{name} = row[{name!r}]" for name in sorted(read)]
    doubles = [f"v_{name} != v_{name}" for name in sorted(read) if kinds[name] == "double"]
    if doubles:
        lines.append(f"    if {' or '.join(doubles)}:")
        lines.append("        raise ValueError('NaN')")
    lines.append("    first = -1")
    branch = "if"
    for k, code in enumerate(codes):
        if live[k]:
            lines += [f"    {branch} {code}:", f"        first = {k}"]
            branch = "elif"
    lines.append("    shadow = None")
    for k, code in enumerate(codes):
        if not live[k]:
            lines += [f"    if {code}:", f"        shadow = (shadow or []) + [_names[{k}]]"]
    lines.append("    return first, shadow")
    return "\n".join(lines)


def compile_row(
    tx: Mapping[str, Any],
    features: Sequence[str],
    derived: Sequence[str],
    model: Collection[str],
    bands: Sequence[str],
) -> Callable[..., dict[str, Any]]:
    """`row(tx, picked, score, band)`: the variables a set reads as one dict display: the
    transaction's fields `tx` (name -> the value of its type when the transaction has none,
    converted to that type), the picked features (`features` as read, then `derived`:
    velocity kept as log1p, given back in plain units), and the model's `score` and band."""
    items = [f"{n!r}: {type(empty).__name__}(tx.get({n!r}, {empty!r}))" for n, empty in tx.items()]
    items += [f"{n!r}: picked[{i}]" for i, n in enumerate(features)]
    items += [f"{n!r}: _expm1(picked[{len(features) + i}])" for i, n in enumerate(derived)]
    items += ["'score': score"] if "score" in model else []
    items += ["'model_band': _bands[band]"] if "model_band" in model else []
    source = "def row(tx, picked, score, band):\n    return {" + ", ".join(items) + "}"
    namespace = {"_expm1": math.expm1, "_bands": tuple(bands)}
    exec(compile(source, "<rule row>", "exec"), namespace)  # noqa: S102 - names checked by the caller
    return namespace["row"]
