"""Analysts' rules and lists beside the model: the language, its checks and its evaluation.

A rule is "action if condition": the action is allow, review (the CHALLENGE band) or block,
the condition a CEL expression (the Common Expression Language of Kubernetes and Envoy,
through the `common-expression-language` package: a Rust interpreter with no I/O, no
loops and no access to Python objects) over the transaction's fields, its features, the
model's score and band, and list membership (`in_list('name', value)`). Rules are ordered;
the first enforced rule that matches decides the band, and without one the model's band
stands. A shadow rule is evaluated and its matches recorded, but decides nothing.

The package has no type checker, so a condition is checked here before it may be served:
its text (length, bracket depth, at most one comprehension: a comprehension can only range
over a literal list, so its work is bounded by the text), CEL's own parser (errors carry
their line and column), every name and function against what the evaluation provides, and
a trial evaluation on a typed sample that must give true or false.

A served set runs as one Python function compiled from its conditions
(fraudops.rule_compiler: CEL's comparisons, logic, arithmetic and string tests as Python
bytecode, each answer the interpreter's); the conditions it does not take are evaluated by
the interpreter, one context a transaction, and a transaction on which the function raises
is evaluated by the interpreter rule by rule. A list lookup of a plain name
(`in_list('blocked', user_id)`, the usual form) is made once per transaction in Python,
before the evaluation, and read as a variable: ten rules reading one list make one lookup. A rule
that fails at run time (a division by zero) matches nothing and is counted; the others still
decide."""

from __future__ import annotations

import ipaddress
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import cel
import numpy as np

from fraudops.bands import BANDS
from fraudops.features import FEATURE_NAMES
from fraudops.geoip import ip_hash
from fraudops.rule_compiler import KINDS, compile_row, compile_rules
from fraudops.schema import (
    COUNTRY_COLUMNS,
    IP_COLUMN,
    NUMERIC_COLUMNS,
    STRIPE_ID_COLUMNS,
    text_problem,
)

ACTIONS: dict[str, int] = {"allow": 0, "review": 1, "block": 2}  # -> fraudops.bands index
MODES = ("draft", "shadow", "live", "off")  # shadow and live rules are served
SERVED_MODES = ("shadow", "live")
LIST_KINDS = ("user", "customer", "ip", "country")
MODEL = "model"  # what `decided_by` says when no rule decided
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
MAX_CONDITION_CHARS = 2000
MAX_DEPTH = 16  # brackets within brackets; CEL's parser stops at 96 on its own
MAX_COMPREHENSIONS = 1
MAX_RULES = 500

# What a condition may read, with a sample value of its type (the trial evaluation).
TX_VARIABLES: dict[str, Any] = {
    "transaction_id": "tx-1",
    "user_id": 1,
    "timestamp": 1_700_000_000,
    "type": "TRANSFER",
    **{name: 1.0 for name in NUMERIC_COLUMNS},
    "dest_id": 2,
    "channel": "web",
    "balances_missing": False,
    **{name: "" for name in STRIPE_ID_COLUMNS},
    # Where it came from ('' unknown): the address (read, never stored) and the countries.
    IP_COLUMN: "",
    "ip_country": "",
    **{name: "" for name in COUNTRY_COLUMNS},
}
FEATURE_VARIABLES: dict[str, Any] = {n: 0.0 for n in FEATURE_NAMES if n not in TX_VARIABLES}
# Velocity in the analyst's units: the features hold log1p of these.
DERIVED_VARIABLES: dict[str, str] = {
    "amount_sum_1h": "log_amount_sum_1h",
    "amount_sum_24h": "log_amount_sum_24h",
    "seconds_since_last": "log_seconds_since_last",
}
MODEL_VARIABLES: dict[str, Any] = {"score": 0.5, "model_band": "ALLOW"}
VARIABLES: dict[str, Any] = {
    **TX_VARIABLES,
    **FEATURE_VARIABLES,
    **dict.fromkeys(DERIVED_VARIABLES, 0.0),
    **MODEL_VARIABLES,
}
LIST_FUNCTION = "in_list"
# CEL's operators (as the parser names them) and the standard functions the interpreter has.
_OPERATORS = "_+_ _-_ _*_ _/_ _%_ -_ !_ _==_ _!=_ _<_ _<=_ _>_ _>=_ _&&_ _||_ _?_:_ _[_] @in"
_STANDARD = "@not_strictly_false size contains startsWith endsWith matches int uint double string"
FUNCTIONS = frozenset(_OPERATORS.split() + _STANDARD.split() + ["bool", "has", LIST_FUNCTION])
_MACRO = re.compile(r"\.\s*(all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
_LIST_CALL = re.compile(r"\bin_list\s*\(\s*(?:'([^']*)'|\"([^\"]*)\")?")
_PARSE_POSITION = re.compile(r"<input>:(\d+):(\d+): (.*)")
# A string literal (left as it is) or a list lookup of a plain name (made a variable).
_LITERAL_OR_LOOKUP = re.compile(
    r"""(?P<literal>'[^'\n]*'|"[^"\n]*")"""
    r"""|\bin_list\s*\(\s*(?:'(?P<name1>[^']*)'|"(?P<name2>[^"]*)")"""
    r"""\s*,\s*(?P<arg>[A-Za-z_]\w*)\s*\)"""
)
MEMBER_PREFIX = "in_list_member_"  # the variables that hold looked-up memberships
# An IP list keeps a single address only as this prefix and the address's keyed hash
# (fraudops.geoip.ip_hash, the one the scorers store in scored_transactions.ip_hash);
# networks stay networks.
HASH_PREFIX = "iphash:"
_HASHED = re.compile(rf"^{HASH_PREFIX}[0-9a-f]{{32}}$")


class RuleError(ValueError):
    """A rule or list item refused; `field` names what is wrong, `position` (line, column,
    1-based) where in the condition, when known."""

    def __init__(self, field: str, problem: str, position: tuple[int, int] | None = None):
        where = f" at line {position[0]}, column {position[1]}" if position else ""
        super().__init__(f"{field}: {problem}{where}")
        self.field = field
        self.problem = problem
        self.position = position


@dataclass(frozen=True)
class Rule:
    name: str
    action: str  # allow, review, block
    condition: str
    mode: str = "live"

    @property
    def band(self) -> int:
        return ACTIONS[self.action]


# --- lists ---------------------------------------------------------------------------------


def canonical_value(kind: str, value: Any, hash_key: str | None = None) -> str:
    """A list item as stored and looked up: user ids as integers, countries as upper-case
    ISO codes, IP networks in ipaddress's form and a single IP address as its keyed hash
    under `hash_key` (personal data is not stored as it is; a value already in the hashed
    form is taken as it is); RuleError names the problem."""
    text = str(value).strip()
    if kind == "user":
        if not re.fullmatch(r"\d{1,19}", text) or not 0 < int(text) < 2**63:
            raise RuleError("value", f"a user id is a positive 64-bit integer, got {text!r:.40}")
        return str(int(text))
    if kind == "country":
        if not re.fullmatch(r"[A-Za-z]{2}", text):
            raise RuleError("value", f"a country is a two-letter ISO code, got {text!r:.40}")
        return text.upper()
    if kind == "ip":
        return _canonical_ip(text, hash_key)
    if kind == "customer":
        if problem := text_problem(text, 128, printable=True) or ("is empty" if not text else ""):
            raise RuleError("value", problem)
        return text
    raise RuleError("kind", f"unknown list kind {kind!r}; expected one of {', '.join(LIST_KINDS)}")


def _canonical_ip(text: str, hash_key: str | None) -> str:
    if _HASHED.match(text):
        return text
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError as err:
        raise RuleError("value", f"not an IP address or network: {err}") from err
    if net.prefixlen < net.max_prefixlen:
        return str(net)
    if not hash_key:
        raise RuleError("value", "a single IP address is stored only as a keyed hash: set "
                        "FRAUDOPS_IP_HASH_KEY (or give a network)")  # fmt: skip
    return HASH_PREFIX + ip_hash(str(net.network_address), hash_key)


def shown_value(value: str) -> str:
    """A list item as the console and the CLI show it: a hashed address masked."""
    return f"{value[: len(HASH_PREFIX) + 8]}…" if _HASHED.match(value) else value


def single_address(value: str) -> str | None:
    """The address of an IP list item stored as it was given (a /32 or /128 network, kept
    before addresses were hashed); None for a network or a hashed address."""
    if _HASHED.match(value):
        return None
    net = ipaddress.ip_network(value)
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else None


@dataclass
class ListIndex:
    """One list's items (value -> expiry in Unix seconds, inf for none), looked up by kind;
    an IP list keeps its networks by prefix length, so a lookup is a few set probes, and its
    hashed addresses by hash, looked up with the transaction's keyed hash (made once, by the
    scoring core's enrichment, under the same key) or, without one, the address hashed here."""

    kind: str
    items: dict[str, float] = field(default_factory=dict)
    hash_key: str | None = None
    _networks: dict[tuple[int, int], dict[int, float]] = field(default_factory=dict)
    _hashes: dict[str, float] = field(default_factory=dict)

    @classmethod
    def build(
        cls, kind: str, items: Iterable[tuple[str, float]], hash_key: str | None = None
    ) -> ListIndex:
        index = cls(kind, dict(items), hash_key)
        if kind == "ip":
            for value, expiry in index.items.items():
                if value.startswith(HASH_PREFIX):
                    index._hashes[value] = expiry
                    continue
                net = ipaddress.ip_network(value)
                key = (net.version, net.prefixlen)
                index._networks.setdefault(key, {})[int(net.network_address)] = expiry
        return index

    def contains(self, value: Any, now: float, hashed: str | None = None) -> bool:
        """Whether `value` is listed and in force at `now`; `hashed` is the keyed hash of an
        address `value` when the caller has it (a stored score has only that)."""
        if self.kind == "ip":
            return self._contains_ip(value, now, hashed)
        key = str(value).upper() if self.kind == "country" else str(value)
        return self.items.get(key, 0.0) > now

    def _contains_ip(self, value: Any, now: float, hashed: str | None) -> bool:
        text = str(value).strip()
        if self._hashes:
            if hashed is None and self.hash_key and text and not text.startswith(HASH_PREFIX):
                hashed = ip_hash(text, self.hash_key)
            found = text if text.startswith(HASH_PREFIX) else HASH_PREFIX + (hashed or "")
            if self._hashes.get(found, 0.0) > now:
                return True
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return False
        number, width = int(address), address.max_prefixlen
        for (version, prefix), networks in self._networks.items():
            if version == address.version:
                masked = number >> (width - prefix) << (width - prefix) if prefix else 0
                if networks.get(masked, 0.0) > now:
                    return True
        return False


# --- checking a condition ------------------------------------------------------------------


def _depth_problem(text: str) -> tuple[int, int] | None:
    """Where brackets (outside string literals) first nest deeper than MAX_DEPTH."""
    depth, quote, escaped = 0, "", False
    for i, c in enumerate(text):
        if quote:
            if c == quote and not escaped:
                quote = ""
            escaped = not escaped and c == "\\"
        elif c in "'\"":
            quote = c
        elif c in "([{":
            depth += 1
            if depth > MAX_DEPTH:
                return _line_column(text, i)
        elif c in ")]}":
            depth -= 1
    return None


def _line_column(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _position_of(text: str, name: str) -> tuple[int, int] | None:
    found = re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", text)
    return _line_column(text, found.start()) if found else None


def _check_text(text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise RuleError("condition", "must be a non-empty expression")
    if problem := text_problem(text.replace("\n", " "), MAX_CONDITION_CHARS):
        raise RuleError("condition", problem)
    if (where := _depth_problem(text)) is not None:
        raise RuleError("condition", f"nests brackets deeper than {MAX_DEPTH}", where)
    if len(_MACRO.findall(text)) > MAX_COMPREHENSIONS:
        raise RuleError("condition", f"more than {MAX_COMPREHENSIONS} comprehension "
                        "(all, exists, exists_one, map, filter)")  # fmt: skip
    return text


def _compile(text: str) -> cel.Program:
    try:
        return cel.compile(text)
    except (ValueError, RuntimeError) as err:
        found = _PARSE_POSITION.search(str(err))
        if found is None:
            raise RuleError("condition", str(err).splitlines()[0][:300]) from None
        line, column, problem = found.groups()
        raise RuleError("condition", problem[:300], (int(line), int(column))) from None


def _check_references(text: str, program: cel.Program, lists: Mapping[str, str]) -> None:
    bound = {name for _, name in _MACRO.findall(text)}
    for name in program.variables():
        if name not in VARIABLES and name not in bound:
            raise RuleError("condition", f"unknown name {name!r}", _position_of(text, name))
    for name in program.functions():
        if name not in FUNCTIONS:
            raise RuleError("condition", f"unknown function {name!r}", _position_of(text, name))
    for found in _LIST_CALL.finditer(text):
        name = found.group(1) if found.group(1) is not None else found.group(2)
        where = _line_column(text, found.start())
        if name is None:
            raise RuleError("condition", "in_list takes a list name in quotes first", where)
        if name not in lists:
            raise RuleError("condition", f"no list named {name!r}", where)


def lists_read(text: str) -> set[str]:
    """The names of the lists a condition reads."""
    return {a or b for a, b in _LIST_CALL.findall(text) if a or b}


def check_condition(text: Any, lists: Mapping[str, str]) -> cel.Program:
    """The compiled condition, or RuleError saying what is wrong and where. `lists` maps the
    names of the lists that exist to their kinds."""
    text = _check_text(text)
    program = _compile(text)
    _check_references(text, program, lists)
    empty = {name: ListIndex(kind) for name, kind in lists.items()}
    context = cel.Context(variables=VARIABLES, functions={LIST_FUNCTION: _membership(empty, 0)})
    try:
        result = program.execute(context)
    except Exception as err:  # noqa: BLE001 - the interpreter's own type and value errors
        problem = str(err).split(". ")[0][:200]
        raise RuleError("condition", f"fails on a sample transaction: {problem}") from None
    if not isinstance(result, bool):
        raise RuleError("condition", f"must be true or false, got {type(result).__name__}")
    return program


def check_rule(rule: Rule, lists: Mapping[str, str]) -> cel.Program:
    if not isinstance(rule.name, str) or not NAME_PATTERN.match(rule.name):
        raise RuleError("name", "lower-case letters, digits and _, starting with a letter")
    if rule.action not in ACTIONS:
        raise RuleError("action", f"one of {', '.join(ACTIONS)}, got {rule.action!r:.20}")
    if rule.mode not in MODES:
        raise RuleError("mode", f"one of {', '.join(MODES)}, got {rule.mode!r:.20}")
    try:
        return check_condition(rule.condition, lists)
    except RuleError as err:
        raise RuleError(f"rules[{rule.name}].condition", err.problem, err.position) from None


def _membership(lists: Mapping[str, ListIndex], now: float) -> Callable[[str, Any], bool]:
    def in_list(name: str, value: Any) -> bool:
        index = lists.get(name)
        if index is None:
            raise KeyError(f"no list named {name!r}")
        return index.contains(value, now)

    return in_list


# --- a served rule set ---------------------------------------------------------------------


@dataclass
class Decisions:
    """What the rules did to a batch: aligned with its transactions."""

    bands: np.ndarray
    decided_by: list[str]  # MODEL or the deciding rule's name
    shadow: list[list[str] | None]  # the shadow rules that matched, per transaction
    errors: int = 0  # rule evaluations that failed (they matched nothing)
    matched: bool = False  # whether any rule, live or shadow, matched in the batch


class RuleSet:
    """An immutable, checked set of served rules and the lists they read, with its version.
    Built whole or not at all: a rule that fails its checks refuses the set."""

    def __init__(
        self,
        version: str,
        rules: Sequence[Rule],
        lists: Mapping[str, ListIndex],
        interpreter_only: bool = False,
    ):
        if len(rules) > MAX_RULES:
            raise RuleError("rules", f"more than {MAX_RULES} served rules")
        kinds = {name: index.kind for name, index in lists.items()}
        self.version = version
        self.rules = tuple(r for r in rules if r.mode in SERVED_MODES)
        self.lists = dict(lists)
        self._programs = [check_rule(r, kinds) for r in self.rules]
        self.reasons = {r.name: rule_reason(r) for r in self.rules}  # what a decision shows
        texts, members = lookups_as_variables([r.condition for r in self.rules])
        # (variable, list, argument, whether an address): looked up before each evaluation
        self._lookups = tuple((v, self.lists[name], arg, arg == IP_COLUMN)
                              for v, (name, arg) in members.items())  # fmt: skip
        variables = {name: KINDS[type(v)] for name, v in VARIABLES.items()}
        variables.update(dict.fromkeys(members, "bool"))
        live_at = [r.mode == "live" for r in self.rules]
        rule_names = [r.name for r in self.rules]
        self._compiled = compile_rules(texts, live_at, rule_names, variables, interpreter_only)
        names = set().union(*(p.variables() for p in self._programs)) if self.rules else set()
        self._reads = Reads.of(names & VARIABLES.keys())

    def __len__(self) -> int:
        return len(self.rules)

    def decide(
        self,
        txs: Sequence[Mapping[str, Any]],
        features: np.ndarray,
        scores: np.ndarray,
        bands: np.ndarray,
        now: float | None = None,
    ) -> Decisions | None:
        """The rules' decisions for a scored batch; None when the set is empty."""
        if not self.rules or not len(txs):
            return None
        now = time.time() if now is None else now
        out = Decisions(bands.copy(), [MODEL] * len(txs), [None] * len(txs))
        for i, row in enumerate(self._rows(txs, features, scores, bands, now)):
            first, shadow = self._evaluate(row, now, out)
            if first >= 0:
                out.bands[i] = self.rules[first].band
                out.decided_by[i] = self.rules[first].name
                out.matched = True
            if shadow:
                out.shadow[i] = shadow
                out.matched = True
        return out

    def _evaluate(self, row: dict[str, Any], now: float, out: Decisions):
        """The first live rule that matched (-1: none) and the shadow rules that matched (None:
        none), from the compiled set (fraudops.rule_compiler); when it raises, from the
        interpreter rule by rule (a failing rule matches nothing). The conditions left to the
        interpreter share one context a transaction, made when the first needs it."""
        interpret = self._interpreter(row, now) if self._compiled.interpreted else None
        try:
            return self._compiled.run(row, interpret)
        except Exception:  # noqa: BLE001 - one rule's run-time error, found below
            return self._evaluate_alone(self._context(row, now), out)

    def _interpreter(self, row: dict[str, Any], now: float) -> Callable[[int], bool]:
        context = None

        def interpret(k: int) -> bool:
            nonlocal context
            if context is None:
                context = self._context(row, now)
            return self._programs[k].execute(context) is True

        return interpret

    def _context(self, row: dict[str, Any], now: float) -> cel.Context:
        return cel.Context(variables=row, functions={LIST_FUNCTION: _membership(self.lists, now)})

    def _evaluate_alone(self, context: cel.Context, out: Decisions):
        matched = []
        for program in self._programs:
            try:
                matched.append(program.execute(context) is True)
            except Exception:  # noqa: BLE001
                out.errors += 1
                matched.append(False)
        live = (k for k, r in enumerate(self.rules) if r.mode == "live" and matched[k])
        shadow = [r.name for k, r in enumerate(self.rules) if r.mode == "shadow" and matched[k]]
        return next(live, -1), shadow or None

    def _rows(self, txs, features, scores, bands, now: float) -> Iterable[dict[str, Any]]:
        """The variables the set reads, one dict per transaction, with its list lookups (an
        address's with the keyed hash the transaction carries, when it does)."""
        for tx, row in zip(txs, self._reads.rows(txs, features, scores, bands), strict=True):
            for variable, index, argument, address in self._lookups:
                hashed = tx.get("ip_hash") if address else None
                row[variable] = index.contains(row[argument], now, hashed)
            yield row


def lookups_as_variables(conditions: Sequence[str]) -> tuple[list[str], dict[str, tuple]]:
    """The conditions with each list lookup of a plain name (outside string literals, not a
    comprehension's own variable) replaced by a variable, and those variables' (list, name).
    A condition with a backslash or triple quotes (escapes the scan does not follow) is left
    as it is: its lookups stay calls, which give the same answers."""
    members: dict[tuple[str, str], str] = {}
    rewritten = []
    for text in conditions:
        if "\\" in text or "'''" in text or '"""' in text:
            rewritten.append(text)
            continue
        bound = {name for _, name in _MACRO.findall(text)}
        rewritten.append(
            _LITERAL_OR_LOOKUP.sub(partial(_lookup, bound=bound, members=members), text)
        )
    return rewritten, {variable: key for key, variable in members.items()}


def _lookup(found: re.Match, bound: set[str], members: dict[tuple[str, str], str]) -> str:
    argument = found.group("arg")
    if found.group("literal") is not None or argument in bound or argument not in VARIABLES:
        return found.group(0)
    name = found.group("name1") if found.group("name1") is not None else found.group("name2")
    return members.setdefault((name, argument), f"{MEMBER_PREFIX}{len(members)}")


_FEATURE_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}


@dataclass(frozen=True)
class Reads:
    """What a rule set reads, grouped by where it comes from, so that the batch's features
    are picked with one numpy call and each row is one generated dict display
    (fraudops.rule_compiler.compile_row): a numpy call or a loop per variable costs a
    transaction scored alone more than the evaluation of a hundred compiled rules."""

    index: np.ndarray  # the features read, then the velocity sums kept as log1p
    model: tuple[str, ...]  # score, model_band
    build: Callable[..., dict[str, Any]]

    @classmethod
    def of(cls, names: set[str]) -> Reads:
        plain = sorted(n for n in names if n in FEATURE_VARIABLES)
        derived = sorted(n for n in names if n in DERIVED_VARIABLES)
        index = [_FEATURE_INDEX[n] for n in plain]
        index += [_FEATURE_INDEX[DERIVED_VARIABLES[n]] for n in derived]
        tx = {n: type(TX_VARIABLES[n])() for n in sorted(names & TX_VARIABLES.keys())}
        model = tuple(sorted(names & MODEL_VARIABLES.keys()))
        build = compile_row(tx, plain, derived, model, BANDS)
        return cls(np.array(index, dtype=np.intp), model, build)

    def rows(self, txs, features: np.ndarray, scores: np.ndarray, bands: np.ndarray):
        n = len(txs)
        picked = features.take(self.index, axis=1).tolist() if len(self.index) else [()] * n
        score = scores.tolist() if "score" in self.model else [None] * n
        band = bands.tolist() if "model_band" in self.model else [None] * n
        return map(self.build, txs, picked, score, band)


EMPTY = RuleSet("none", [], {})


def rule_reason(rule: Rule) -> str:
    """The reason an answer shows when `rule` decided its band."""
    return f"rule {rule.name}: {rule.action}"


def expiry_seconds(expires_at: Any) -> float:
    """A list item's expiry as Unix seconds (inf for none) from a datetime or None."""
    return math.inf if expires_at is None else expires_at.timestamp()
