"""The console's pure pieces: queue cursors, the WHERE clause a filter builds (values only
ever as parameters), account rules and spreadsheet-safe CSV cells."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from console import auth, queries
from console.app import csv_cell


def test_cursors_round_trip_for_both_orders():
    row = {"score": 0.93, "scored_at": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
           "transaction_id": "tx-1"}  # fmt: skip
    assert queries.decode_cursor(queries.encode_cursor(row, "score"), "score") == (0.93, "tx-1")
    key, tx = queries.decode_cursor(queries.encode_cursor(row, "newest"), "newest")
    assert (key, tx) == (row["scored_at"], "tx-1")


@pytest.mark.parametrize("cursor", ["", "not base64!", "W10=", "WyJ4IiwgMV0="])
def test_foreign_cursors_are_refused(cursor):
    with pytest.raises(queries.BadCursor):
        queries.decode_cursor(cursor, "score")


def test_a_score_cursor_is_no_newest_cursor():
    cursor = queries.encode_cursor({"score": 0.5, "transaction_id": "t"}, "score")
    with pytest.raises(queries.BadCursor):
        queries.decode_cursor(cursor, "newest")


def test_filter_values_are_parameters_never_sql():
    hostile = "' OR 1=1 --"
    where, params = queries.queue_where(queries.QueueFilter(q=hostile, model_version=hostile))
    assert hostile not in where
    assert params.count(hostile) == 2


def test_one_band_clause_whichever_bands():
    where, _ = queries.queue_where(queries.QueueFilter())
    assert where.count("s.band") == 1 and "'CHALLENGE', 'BLOCK'" in where
    where, params = queries.queue_where(queries.QueueFilter(band=("BLOCK",)))
    assert where.count("s.band") == 1 and params[0] == ["BLOCK"]


def test_numeric_search_matches_user_ids_within_bigint():
    _, params = queries.queue_where(queries.QueueFilter(q="4242"))
    assert params == ["4242", 4242]
    _, params = queries.queue_where(queries.QueueFilter(q="9" * 30))
    assert params == ["9" * 30]


@pytest.mark.parametrize(
    ("name", "role", "password", "field"),
    [("Bad Name", "analyst", "x" * 12, "name"), ("ok", "root", "x" * 12, "role"),
     ("ok", "viewer", "short", "password")],
)  # fmt: skip
def test_account_rules_name_the_field(name, role, password, field):
    with pytest.raises(auth.AccountError, match=field):
        auth.check_account(name, role, password)


def test_roles_and_label_source():
    analyst, viewer = auth.User("alice", "analyst"), auth.User("vic", "viewer")
    assert analyst.may("label") and not analyst.may("rollback")
    assert not viewer.may("label") and auth.User("root", "admin").may("rollback")
    assert analyst.label_source == "analyst:alice"


@pytest.mark.parametrize("value", ["=1+1", "+1", "-1", "@SUM(A1)"])
def test_csv_cells_cannot_start_a_formula(value):
    assert csv_cell(value) == "'" + value
    assert csv_cell("web") == "web" and csv_cell(3.5) == 3.5
