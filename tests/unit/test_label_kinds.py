"""Label kinds from sources: analysts' verdicts are feedback, chargebacks and claims delayed."""

from __future__ import annotations

import pytest

from fraudops.label_kinds import DELAYED, FEEDBACK, MATURED_SOURCE, label_kind


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("analyst:alice", FEEDBACK),
        ("Analyst: Bob", FEEDBACK),
        ("console:carol", FEEDBACK),
        ("someone", FEEDBACK),
        ("chargeback:visa", DELAYED),
        ("dispute:mastercard", DELAYED),
        ("stripe:dispute", DELAYED),
        ("customer:claim", DELAYED),
        (MATURED_SOURCE, DELAYED),
    ],
)
def test_kind_is_read_from_who_labelled(source, kind):
    assert label_kind(source) == kind
