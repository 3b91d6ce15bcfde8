"""The console's rules and lists: write a rule, backtest it over a period of stored scores,
publish it (shadow or live; only after a backtest of it as it stands), and edit lists. Every
write needs the `edit_rules` role and names who (the signed-in user) and why (the body's
reason); a refused rule answers 422 with the field, the problem and its position."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query
from fastapi import Path as PathParam
from pydantic import Field

from console import app as console
from console import schemas
from fraudops import backtest as backtests
from fraudops import rule_sets
from fraudops.rules import LIST_KINDS, MAX_CONDITION_CHARS, VARIABLES, Rule, RuleError
from fraudops.settings import Settings

Name = Annotated[str, PathParam(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
Reason = Annotated[str, Field(min_length=1, max_length=rule_sets.MAX_REASON)]


class RuleBody(console.Strict):
    action: Literal["allow", "review", "block"]
    condition: str = Field(min_length=1, max_length=MAX_CONDITION_CHARS)
    position: int = Field(default=100, ge=0, le=100_000)
    reason: Reason


class BacktestBody(console.Strict):
    period_from: datetime
    period_to: datetime


class PublishBody(console.Strict):
    mode: Literal["draft", "shadow", "live", "off"]
    reason: Reason


class ListBody(console.Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    kind: Literal[LIST_KINDS]  # type: ignore[valid-type]
    description: str = Field(default="", max_length=500)
    reason: Reason


class DeleteBody(console.Strict):
    reason: Reason


class ItemsBody(console.Strict):
    values: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        min_length=1, max_length=10_000
    )
    reason: Reason
    expires_at: datetime | None = None


def refused(err: RuleError) -> HTTPException:
    return HTTPException(422, {"field": err.field, "problem": err.problem,
                               "position": err.position, "message": str(err)})  # fmt: skip


@contextlib.contextmanager
def transaction(conn) -> Iterator[Any]:
    """One transaction on the route's autocommit connection; a RuleError answers 422."""
    conn.autocommit = False
    try:
        with conn, conn.cursor() as cur:
            yield cur
    except RuleError as err:
        raise refused(err) from None
    finally:
        conn.autocommit = True


def add_rule_routes(app: FastAPI, settings: Settings) -> None:
    @app.get("/api/rules")
    def rules(conn: console.Db, user: console.CurrentUser) -> schemas.Rules:
        with conn.cursor() as cur:
            version, _served = rule_sets.served_rules(cur)
            return {"rules": rule_sets.rules(cur), "version": version,
                    "lists": rule_sets.list_kinds(cur), "names": sorted(VARIABLES)}  # fmt: skip

    @app.put("/api/rules/{name}")
    def save(
        name: Name, body: RuleBody, conn: console.Db, user: console.CurrentUser
    ) -> schemas.Saved:
        console.allowed(user, "edit_rules")
        with transaction(conn) as cur:
            rule = Rule(name, body.action, body.condition, "draft")
            rule_sets.save_rule(cur, rule, body.position, user.name, body.reason)
        return {"saved": name}

    @app.post("/api/rules/{name}/backtest")
    def backtest(name: Name, body: BacktestBody, conn: console.Db,
                 user: console.CurrentUser) -> schemas.Backtest:  # fmt: skip
        console.allowed(user, "edit_rules")
        if body.period_to <= body.period_from:
            raise HTTPException(422, "period_to must come after period_from")
        with transaction(conn) as cur:
            rule = _rule(cur, name)
            _seq, lists = rule_sets.load_lists(cur, settings.ip_hash_key)
            try:
                result = backtests.backtest(cur, rule, body.period_from, body.period_to, lists)
            except backtests.PeriodTooLarge as err:
                raise HTTPException(422, str(err)) from err
            period = (body.period_from, body.period_to)
            result["id"] = rule_sets.record_backtest(cur, rule, period, result, user.name)
        return result

    @app.post("/api/rules/{name}/publish")
    def publish(name: Name, body: PublishBody, conn: console.Db,
                user: console.CurrentUser) -> schemas.RulesPublished:  # fmt: skip
        console.allowed(user, "edit_rules")
        with transaction(conn) as cur:
            version = rule_sets.publish(cur, name, body.mode, user.name, body.reason)
        return {"version": version, "mode": body.mode}

    @app.get("/api/rules/shadow")
    def shadow(conn: console.Db, user: console.CurrentUser,
               days: Annotated[int, Query(ge=1, le=90)] = 14) -> schemas.ShadowMatches:  # fmt: skip
        with conn.cursor() as cur:
            cur.execute(
                "SELECT date_trunc('day', scored_at)::date AS day, r AS rule, count(*) "
                "FROM scored_transactions, unnest(shadow_rules) AS r WHERE shadow_rules "
                "IS NOT NULL AND scored_at >= now() - make_interval(days => %s) "
                "GROUP BY 1, 2 ORDER BY 1, 2",
                (days,),
            )
            return {"matches": [{"day": d.isoformat(), "rule": r, "count": n}
                                for d, r, n in cur.fetchall()]}  # fmt: skip

    add_list_routes(app, settings)


def _rule(cur, name: str) -> Rule:
    found = [r for r in rule_sets.rules(cur) if r["name"] == name]
    if not found:
        raise HTTPException(404, f"no rule named {name}")
    return Rule(name, found[0]["action"], found[0]["condition"], found[0]["mode"])


def add_list_routes(app: FastAPI, settings: Settings) -> None:
    key = settings.ip_hash_key  # a single IP address is stored as its keyed hash

    @app.get("/api/lists")
    def lists(conn: console.Db, user: console.CurrentUser) -> schemas.RuleLists:
        with conn.cursor() as cur:
            return {"lists": rule_sets.lists(cur)}

    @app.post("/api/lists")
    def create(body: ListBody, conn: console.Db, user: console.CurrentUser) -> schemas.Created:
        console.allowed(user, "edit_rules")
        with transaction(conn) as cur:
            rule_sets.create_list(cur, body.name, body.kind, user.name, body.reason,
                                  body.description)  # fmt: skip
        return {"created": body.name}

    @app.get("/api/lists/{name}")
    def items(name: Name, conn: console.Db, user: console.CurrentUser) -> schemas.ListItems:
        with conn.cursor() as cur:
            return {"name": name, "items": rule_sets.list_items(cur, name)}

    @app.post("/api/lists/{name}/items")
    def add(
        name: Name, body: ItemsBody, conn: console.Db, user: console.CurrentUser
    ) -> schemas.Added:
        console.allowed(user, "edit_rules")
        with transaction(conn) as cur:
            n = rule_sets.add_items(cur, name, body.values, user.name, body.reason,
                                    body.expires_at, key)  # fmt: skip
        return {"added": n}

    @app.post("/api/lists/{name}/remove")
    def remove(
        name: Name, body: ItemsBody, conn: console.Db, user: console.CurrentUser
    ) -> schemas.Removed:
        console.allowed(user, "edit_rules")
        with transaction(conn) as cur:
            return {"removed": rule_sets.remove_items(cur, name, body.values, user.name,
                                                      body.reason, key)}  # fmt: skip

    @app.post("/api/lists/{name}/delete")
    def delete(
        name: Name, body: DeleteBody, conn: console.Db, user: console.CurrentUser
    ) -> schemas.ListDeleted:
        """Delete a list; 422 naming the live or shadow rules that read it."""
        console.allowed(user, "edit_rules")
        with transaction(conn) as cur:
            items = rule_sets.delete_list(cur, name, user.name, body.reason)
        return {"deleted": name, "items": items}
