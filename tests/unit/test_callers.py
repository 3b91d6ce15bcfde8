"""The rules of serving.callers and of the console's sign-in throttle, without services."""

from __future__ import annotations

import pytest

from console.auth import Failures, Throttle
from fraudops.settings import Settings
from serving.callers import CallerError, anonymous_methods, check_caller
from serving.labels import source_refusal


@pytest.mark.parametrize(
    ("patterns", "source", "allowed"),
    [
        (["stripe:*"], "stripe:dispute", True),
        (["stripe:*", "chargeback:*"], "chargeback:visa", True),
        (["stripe:*"], "chargeback:visa", False),
        (["chargeback:visa"], "chargeback:visa2", False),
        (["*"], "analyst:alice", False),  # the console's, whatever the patterns say
        ([], "stripe:dispute", False),
    ],
)
def test_a_source_must_match_a_pattern_and_never_be_an_analysts(patterns, source, allowed):
    reason = source_refusal(patterns, source, "caller 'x'")
    assert (reason is None) == allowed
    if reason is not None:
        assert reason.startswith("source: ")


@pytest.mark.parametrize(
    ("name", "scopes", "sources", "field"),
    [
        ("Bad Name", ["score"], [], "name"),
        ("ok", [], [], "scopes"),
        ("ok", ["admin"], [], "scopes"),
        ("ok", ["label"], ["*"], "sources"),
        ("ok", ["label"], ["analyst:*"], "sources"),
        ("ok", ["score"], ["stripe:*"], "sources"),
    ],
)
def test_a_caller_that_breaks_a_rule_is_refused_naming_the_field(name, scopes, sources, field):
    with pytest.raises(CallerError, match=f"^{field}:"):
        check_caller(name, scopes, sources)


def test_labels_can_never_be_anonymous():
    assert anonymous_methods(Settings(grpc_anonymous_methods="Score, SendTransaction")) == {
        "Score", "SendTransaction"
    }  # fmt: skip
    assert anonymous_methods(Settings()) == frozenset()
    with pytest.raises(ValueError, match="FRAUDOPS_GRPC_ANONYMOUS_METHODS: SubmitLabel"):
        anonymous_methods(Settings(grpc_anonymous_methods="Score,SubmitLabel"))


def test_each_failure_doubles_the_wait_and_enough_lock_the_pair():
    throttle = Throttle(first_delay_s=1.0, max_failures=5, max_client_failures=20, window_s=900)
    assert throttle.wait_s(Failures(0, 0.0, 0)) == 0
    assert [throttle.wait_s(Failures(n, 0.0, n)) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert throttle.wait_s(Failures(3, 10.0, 3)) == 0  # waited long enough
    assert throttle.wait_s(Failures(5, 100.0, 5)) == 800  # locked until the window passes
    assert throttle.wait_s(Failures(0, 0.0, 20)) == 900  # this client, over all accounts
