"""Rules and lists in Postgres: edits (each with who and why in audit_log), publishing, and
what a scoring process loads.

A process serves the latest `rule_set_versions` row, a snapshot of the served rules that was
checked as a whole before it was written, and the lists as of the latest
`rule_list_changes` sequence number. Writers of either hold one advisory lock, so sequence
numbers become visible in order and a process that applied changes up to N never misses
one below it. Publishing a rule (shadow or live) needs a backtest of its present action and
condition.

An IP list keeps a single address only as its keyed hash (FRAUDOPS_IP_HASH_KEY, the hash the
scorers store as scored_transactions.ip_hash), networks as they are. Items stored as given
before that (a /32 or /128 network) are hashed by the first writer holding the key: the
console when it starts and every run of this CLI (`hash_stored_addresses`); the SQL
migrations cannot, the key is not in the database.

CLI (lists): `python -m fraudops.rule_sets list-create NAME KIND --by NAME --reason TEXT`,
`list-add NAME VALUE... [--expires ISO-TIME]`, `list-remove NAME VALUE...`, `list-show NAME`,
`list-delete NAME` (refused while a live or shadow rule reads the list)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from fraudops.db import connect
from fraudops.db.audit import append_audit
from fraudops.rules import (
    LIST_KINDS,
    MODES,
    NAME_PATTERN,
    SERVED_MODES,
    ListIndex,
    Rule,
    RuleError,
    RuleSet,
    canonical_value,
    check_rule,
    expiry_seconds,
    lists_read,
    shown_value,
    single_address,
)
from fraudops.settings import load_settings

_WRITE_LOCK = 0x6672_6175_6424  # serialises rule and list writes (ordered sequence numbers)
MAX_ITEMS_PER_CALL = 100_000
MAX_REASON = 500


def _lock(cur) -> None:
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))


def _why(by: str, reason: str) -> None:
    if not by or not isinstance(by, str):
        raise RuleError("by", "who makes the change is required")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise RuleError("reason", f"why the change is made is required (at most {MAX_REASON})")


# --- lists ---------------------------------------------------------------------------------


def list_kinds(cur) -> dict[str, str]:
    cur.execute("SELECT name, kind FROM rule_lists")
    return dict(cur.fetchall())


def lists(cur) -> list[dict[str, Any]]:
    """Every list with how many of its items are in force now."""
    cur.execute(
        "SELECT l.name, l.kind, l.description, l.created_by, l.created_at, count(i.value) "
        "FROM rule_lists l LEFT JOIN rule_list_items i ON i.list_name = l.name AND "
        "(i.expires_at IS NULL OR i.expires_at > now()) GROUP BY l.name ORDER BY l.name"
    )
    keys = ("name", "kind", "description", "created_by", "created_at", "items")
    return [dict(zip(keys, row, strict=True)) for row in cur.fetchall()]


def create_list(cur, name: str, kind: str, by: str, reason: str, description: str = "") -> None:
    _why(by, reason)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise RuleError("name", "lower-case letters, digits and _, starting with a letter")
    if kind not in LIST_KINDS:
        raise RuleError("kind", f"one of {', '.join(LIST_KINDS)}, got {kind!r:.20}")
    _lock(cur)
    cur.execute(
        "INSERT INTO rule_lists (name, kind, description, created_by) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (name) DO NOTHING",
        (name, kind, description[:500], by),
    )
    if cur.rowcount == 0:
        raise RuleError("name", f"a list named {name!r} exists")
    _reset(cur, name, kind)
    append_audit(cur, "list_create", name, {"kind": kind, "by": by, "reason": reason})


def delete_list(cur, name: str, by: str, reason: str) -> int:
    """Delete a list and its items; returns how many items it held. Refused, naming them,
    while a live or shadow rule reads it (a served set must never lose a list it reads)."""
    _why(by, reason)
    _lock(cur)
    kind = _list_kind(cur, name)
    cur.execute("SELECT name, condition FROM rules WHERE mode = ANY(%s) ORDER BY position, name",
                (list(SERVED_MODES),))  # fmt: skip
    readers = [rule for rule, condition in cur.fetchall() if name in lists_read(condition)]
    if readers:
        raise RuleError("list", f"list {name!r} is read by the live or shadow rule(s) "
                        f"{', '.join(readers)}: set them to draft or off first")  # fmt: skip
    cur.execute("DELETE FROM rule_list_items WHERE list_name = %s", (name,))
    items = cur.rowcount
    cur.execute("DELETE FROM rule_lists WHERE name = %s", (name,))
    _reset(cur, name, kind)
    append_audit(cur, "list_delete", name, {"by": by, "reason": reason, "kind": kind,
                 "items": items})  # fmt: skip
    return items


def _reset(cur, name: str, kind: str) -> None:
    """A change telling every scoring process to read the list `name` anew (or drop it)."""
    cur.execute(
        "INSERT INTO rule_list_changes (list_name, kind, value, op) VALUES (%s, %s, '', 'reset')",
        (name, kind),
    )


def _list_kind(cur, name: str) -> str:
    cur.execute("SELECT kind FROM rule_lists WHERE name = %s", (name,))
    row = cur.fetchone()
    if row is None:
        raise RuleError("list", f"no list named {name!r:.80}")
    return row[0]


def _values(kind: str, values: Sequence[Any], hash_key: str | None) -> list[str]:
    if not values or len(values) > MAX_ITEMS_PER_CALL:
        raise RuleError("values", f"give 1 to {MAX_ITEMS_PER_CALL} values")
    out = []
    for i, value in enumerate(values):
        try:
            out.append(canonical_value(kind, value, hash_key))
        except RuleError as err:
            raise RuleError(f"values[{i}]", err.problem) from None
    return list(dict.fromkeys(out))


def add_items(cur, name: str, values: Sequence[Any], by: str, reason: str,
              expires_at: datetime | None = None, hash_key: str | None = None) -> int:  # fmt: skip
    """Add (or renew) items; returns how many. One audit row for the call. `hash_key`:
    the IP hash key (a single address is refused without one)."""
    _why(by, reason)
    kind = _list_kind(cur, name)
    items = _values(kind, values, hash_key)
    _lock(cur)
    cur.execute(
        "INSERT INTO rule_list_items (list_name, value, expires_at, added_by, reason) "
        "SELECT %s, v, %s, %s, %s FROM unnest(%s::text[]) AS v "
        "ON CONFLICT (list_name, value) DO UPDATE SET expires_at = EXCLUDED.expires_at, "
        "added_by = EXCLUDED.added_by, reason = EXCLUDED.reason, added_at = now()",
        (name, expires_at, by, reason, items),
    )
    _changes(cur, name, kind, items, "add", expires_at)
    expiry = expires_at.isoformat() if expires_at else None
    append_audit(cur, "list_add", name, {"by": by, "reason": reason, "count": len(items),
                 "values": items[:20], "expires_at": expiry})  # fmt: skip
    return len(items)


def remove_items(cur, name: str, values: Sequence[Any], by: str, reason: str,
                 hash_key: str | None = None) -> int:  # fmt: skip
    _why(by, reason)
    kind = _list_kind(cur, name)
    items = _values(kind, values, hash_key)
    _lock(cur)
    cur.execute(
        "DELETE FROM rule_list_items WHERE list_name = %s AND value = ANY(%s) RETURNING value",
        (name, items),
    )
    removed = [v for (v,) in cur.fetchall()]
    _changes(cur, name, kind, removed, "remove", None)
    append_audit(cur, "list_remove", name, {"by": by, "reason": reason, "count": len(removed),
                 "values": removed[:20]})  # fmt: skip
    return len(removed)


def _changes(cur, name: str, kind: str, values: list[str], op: str, expires_at) -> None:
    cur.execute(
        "INSERT INTO rule_list_changes (list_name, kind, value, op, expires_at) "
        "SELECT %s, %s, v, %s, %s FROM unnest(%s::text[]) AS v",
        (name, kind, op, expires_at, values),
    )


def list_items(cur, name: str, limit: int = 200) -> list[dict[str, Any]]:
    cur.execute(
        "SELECT value, expires_at, added_by, reason, added_at FROM rule_list_items "
        "WHERE list_name = %s ORDER BY added_at DESC, value LIMIT %s",
        (name, limit),
    )
    keys = ("value", "expires_at", "added_by", "reason", "added_at")
    items = [dict(zip(keys, row, strict=True)) for row in cur.fetchall()]
    for item in items:
        item["shown"] = shown_value(item["value"])
    return items


def load_lists(cur, hash_key: str | None = None) -> tuple[int, dict[str, ListIndex]]:
    """Every list as of the latest change (call in a REPEATABLE READ transaction)."""
    cur.execute("SELECT coalesce(max(seq), 0) FROM rule_list_changes")
    seq = cur.fetchone()[0]
    kinds = list_kinds(cur)
    items: dict[str, list[tuple[str, float]]] = {n: [] for n in kinds}
    cur.execute("SELECT list_name, value, expires_at FROM rule_list_items")
    for name, value, expires_at in cur:
        items[name].append((value, expiry_seconds(expires_at)))
    return seq, {n: ListIndex.build(kinds[n], pairs, hash_key) for n, pairs in items.items()}


def _stored_items(cur, name: str) -> dict[str, float]:
    cur.execute("SELECT value, expires_at FROM rule_list_items WHERE list_name = %s", (name,))
    return {value: expiry_seconds(expires_at) for value, expires_at in cur.fetchall()}


def apply_changes(cur, seq: int, lists: dict[str, ListIndex],
                  hash_key: str | None = None) -> tuple[int, dict[str, ListIndex]]:  # fmt: skip
    """The lists with the changes after `seq` applied to copies of those they touch (a
    reset reads the list anew, as of this transaction; a deleted list is dropped)."""
    cur.execute(
        "SELECT seq, list_name, kind, value, op, expires_at FROM rule_list_changes "
        "WHERE seq > %s ORDER BY seq",
        (seq,),
    )
    changes = cur.fetchall()
    if not changes:
        return seq, lists
    touched: dict[str, dict[str, float]] = {}
    kinds = list_kinds(cur)
    for _seq, name, _kind, value, op, expires_at in changes:
        if op == "reset":
            touched[name] = _stored_items(cur, name)
            continue
        items = touched.setdefault(name, dict(lists[name].items) if name in lists else {})
        if op == "add":
            items[value] = expiry_seconds(expires_at)
        else:
            items.pop(value, None)
    out = {n: lists.get(n) or ListIndex(k, hash_key=hash_key) for n, k in kinds.items()}
    for name, items in touched.items():
        if name in kinds:
            out[name] = ListIndex.build(kinds[name], items.items(), hash_key)
    return changes[-1][0], out


def hash_stored_addresses(cur, hash_key: str, by: str = "fraudops") -> int:
    """Replace the single IP addresses that IP lists kept as given (a /32 or /128 network)
    by their keyed hash, in the items and in the change log, and reset each list touched so
    the scoring processes read it anew; returns how many items changed. The audit log is
    append-only: the rows written when those addresses were added keep them."""
    _lock(cur)
    cur.execute(
        "SELECT list_name, value FROM rule_list_items i JOIN rule_lists l ON l.name = "
        "i.list_name WHERE l.kind = 'ip' AND value ~ '/(32|128)$' UNION SELECT list_name, "
        "value FROM rule_list_changes WHERE kind = 'ip' AND value ~ '/(32|128)$'"
    )
    raw = [(name, value, single_address(value)) for name, value in cur.fetchall()]
    raw = [(name, value, address) for name, value, address in raw if address is not None]
    changed = 0
    for name, value, address in raw:
        hashed = canonical_value("ip", address, hash_key)
        cur.execute(
            "INSERT INTO rule_list_items (list_name, value, expires_at, added_by, reason, "
            "added_at) SELECT list_name, %s, expires_at, added_by, reason, added_at FROM "
            "rule_list_items WHERE list_name = %s AND value = %s ON CONFLICT DO NOTHING",
            (hashed, name, value),
        )
        cur.execute("DELETE FROM rule_list_items WHERE list_name = %s AND value = %s",
                    (name, value))  # fmt: skip
        changed += cur.rowcount
        cur.execute("UPDATE rule_list_changes SET value = %s WHERE kind = 'ip' AND "
                    "list_name = %s AND value = %s", (hashed, name, value))  # fmt: skip
    kinds = list_kinds(cur)
    for name in sorted({name for name, _, _ in raw} & kinds.keys()):
        _reset(cur, name, "ip")
    if raw:
        append_audit(cur, "list_hash_addresses", "ip", {"by": by, "items": changed,
                     "reason": "IP addresses are kept only as a keyed hash"})  # fmt: skip
    return changed


def hash_addresses_in(url: str, hash_key: str, by: str) -> int:
    """`hash_stored_addresses` in a transaction of its own (a process starting)."""
    conn = connect(url)
    try:
        with conn, conn.cursor() as cur:
            return hash_stored_addresses(cur, hash_key, by)
    finally:
        conn.close()


# --- rules ---------------------------------------------------------------------------------


def _rule_row(row: Sequence[Any]) -> dict[str, Any]:
    keys = ("name", "position", "action", "condition", "mode", "backtest", "updated_by",
            "updated_at", "version", "backtested")  # fmt: skip
    return dict(zip(keys, row, strict=True))


def rules(cur) -> list[dict[str, Any]]:
    """Every rule in evaluation order, with its version (how many times it was saved) and
    whether its present action and condition were backtested (what publishing needs)."""
    cur.execute(
        "SELECT r.name, r.position, r.action, r.condition, r.mode, r.backtest, r.updated_by, "
        "r.updated_at, (SELECT count(*) FROM audit_log a WHERE a.kind = 'rule_save' "
        "AND a.subject = r.name), EXISTS (SELECT 1 FROM rule_backtests b WHERE "
        "b.rule_name = r.name AND b.action = r.action AND b.condition = r.condition) "
        "FROM rules r ORDER BY r.position, r.name"
    )
    return [_rule_row(r) for r in cur.fetchall()]


def save_rule(cur, rule: Rule, position: int, by: str, reason: str) -> None:
    """Create or change a rule; a change to a served rule's action or condition makes it a
    draft again (it is unserved until backtested and published anew)."""
    _why(by, reason)
    _lock(cur)
    check_rule(Rule(rule.name, rule.action, rule.condition, "draft"), list_kinds(cur))
    cur.execute("SELECT action, condition, mode FROM rules WHERE name = %s FOR UPDATE",
                (rule.name,))  # fmt: skip
    before = cur.fetchone()
    unchanged = before is not None and before[:2] == (rule.action, rule.condition)
    mode = before[2] if unchanged else "draft"
    cur.execute(
        "INSERT INTO rules (name, position, action, condition, mode, updated_by) "
        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
        "position = EXCLUDED.position, action = EXCLUDED.action, condition = EXCLUDED.condition, "
        "mode = EXCLUDED.mode, updated_by = EXCLUDED.updated_by, updated_at = now(), "
        "backtest = CASE WHEN %s THEN rules.backtest END",
        (rule.name, position, rule.action, rule.condition, mode, by, unchanged),
    )
    append_audit(cur, "rule_save", rule.name, {"by": by, "reason": reason, "action": rule.action,
                 "condition": rule.condition, "position": position, "mode": mode})  # fmt: skip
    if before is not None and before[2] in SERVED_MODES:
        _snapshot(cur, by, f"rule {rule.name} changed: {reason}")


def record_backtest(cur, rule: Rule, period: tuple[datetime, datetime], result: dict,
                    by: str) -> int:  # fmt: skip
    cur.execute(
        "INSERT INTO rule_backtests (rule_name, action, condition, period_from, period_to, "
        "result, run_by) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s) RETURNING id",
        (rule.name, rule.action, rule.condition, *period, json.dumps(result, default=str), by),
    )
    return cur.fetchone()[0]


def publish(cur, name: str, mode: str, by: str, reason: str) -> int:
    """Set a rule's mode (shadow, live, off, draft) and publish the served set; returns the
    new rule set version. Shadow and live need a backtest of the rule as it stands."""
    _why(by, reason)
    if mode not in MODES:
        raise RuleError("mode", f"one of {', '.join(MODES)}, got {mode!r:.20}")
    _lock(cur)
    cur.execute("SELECT action, condition FROM rules WHERE name = %s FOR UPDATE", (name,))
    row = cur.fetchone()
    if row is None:
        raise RuleError("rule", f"no rule named {name!r:.80}")
    backtest = None
    if mode in SERVED_MODES:
        cur.execute(
            "SELECT max(id) FROM rule_backtests WHERE rule_name = %s AND action = %s "
            "AND condition = %s",
            (name, *row),
        )
        backtest = cur.fetchone()[0]
        if backtest is None:
            raise RuleError("backtest", f"run a backtest of rule {name!r} as it stands first")
    cur.execute(
        "UPDATE rules SET mode = %s, backtest = coalesce(%s, backtest), updated_by = %s, "
        "updated_at = now() WHERE name = %s",
        (mode, backtest, by, name),
    )
    append_audit(cur, "rule_publish", name, {"by": by, "reason": reason, "mode": mode,
                 "backtest": backtest})  # fmt: skip
    return _snapshot(cur, by, f"rule {name} {mode}: {reason}")


def _snapshot(cur, by: str, reason: str) -> int:
    """Write the served rules as the next version, checked as a whole first."""
    cur.execute(
        "SELECT name, action, condition, mode FROM rules WHERE mode = ANY(%s) "
        "ORDER BY position, name",
        (list(SERVED_MODES),),
    )
    served = [Rule(*row) for row in cur.fetchall()]
    kinds = list_kinds(cur)
    RuleSet("check", served, {n: ListIndex(k) for n, k in kinds.items()})
    body = [{"name": r.name, "action": r.action, "condition": r.condition, "mode": r.mode}
            for r in served]  # fmt: skip
    cur.execute(
        "INSERT INTO rule_set_versions (rules, published_by, reason) VALUES (%s::jsonb, %s, %s) "
        "RETURNING version",
        (json.dumps(body), by, reason[:MAX_REASON]),
    )
    version = cur.fetchone()[0]
    append_audit(cur, "rule_set_publish", str(version), {"by": by, "reason": reason,
                 "rules": [r.name for r in served]})  # fmt: skip
    return version


def served_rules(cur) -> tuple[int, list[Rule]]:
    """The latest published rule set version and its rules (0 and none before any)."""
    cur.execute("SELECT version, rules FROM rule_set_versions ORDER BY version DESC LIMIT 1")
    row = cur.fetchone()
    if row is None:
        return 0, []
    return row[0], [Rule(r["name"], r["action"], r["condition"], r["mode"]) for r in row[1]]


def versions(cur) -> tuple[int, int]:
    """(latest rule set version, latest list change): what a scoring process polls."""
    cur.execute(
        "SELECT (SELECT coalesce(max(version), 0) FROM rule_set_versions), "
        "(SELECT coalesce(max(seq), 0) FROM rule_list_changes)"
    )
    return cur.fetchone()


# --- CLI -----------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="fraudops rule lists")
    parser.add_argument("--database-url")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("list-create")
    create.add_argument("name")
    create.add_argument("kind", choices=LIST_KINDS)
    create.add_argument("--description", default="")
    for name in ("list-add", "list-remove"):
        cmd = sub.add_parser(name)
        cmd.add_argument("name")
        cmd.add_argument("values", nargs="+")
        if name == "list-add":
            cmd.add_argument("--expires", type=datetime.fromisoformat)
    delete = sub.add_parser("list-delete")
    delete.add_argument("name")
    for cmd in (create, sub.choices["list-add"], sub.choices["list-remove"], delete):
        cmd.add_argument("--by", required=True, help="who makes the change")
        cmd.add_argument("--reason", required=True, help="why")
    show = sub.add_parser("list-show")
    show.add_argument("name")
    return parser


def _run(cur, args: argparse.Namespace, key: str | None) -> Iterable[str]:
    if args.command == "list-create":
        create_list(cur, args.name, args.kind, args.by, args.reason, args.description)
        return [f"created list {args.name} ({args.kind})"]
    if args.command == "list-add":
        n = add_items(cur, args.name, args.values, args.by, args.reason, args.expires, key)
        return [f"added {n} to {args.name}"]
    if args.command == "list-remove":
        return [f"removed {remove_items(cur, args.name, args.values, args.by, args.reason, key)}"]
    if args.command == "list-delete":
        n = delete_list(cur, args.name, args.by, args.reason)
        return [f"deleted list {args.name} ({n} items)"]
    _list_kind(cur, args.name)  # an unknown list is refused, not shown empty
    return [f"{i['shown']}\t{i['expires_at'] or '-'}\t{i['added_by']}\t{i['reason']}"
            for i in list_items(cur, args.name)]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = load_settings()
    conn = connect(args.database_url or settings.database_url or "")
    try:
        with conn, conn.cursor() as cur:
            if settings.ip_hash_key:
                hash_stored_addresses(cur, settings.ip_hash_key, "fraudops.rule_sets")
            for line in _run(cur, args, settings.ip_hash_key):
                print(line)
    except RuleError as err:
        print(f"refused: {err}", file=sys.stderr)
        return 2
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
