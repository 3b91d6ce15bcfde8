"""Which scores a live-stream tick sends (console.live.pick): flagged before ALLOW, the
newest first, in the order they came; the flagged left over wait, the ALLOW only count."""

from __future__ import annotations

import pytest

from console.live import MAX_ITEMS_PER_TICK, pick


def scores(bands: str) -> list[dict]:
    names = {"A": "ALLOW", "C": "CHALLENGE", "B": "BLOCK"}
    return [{"transaction_id": f"t{n}", "band": names[b]} for n, b in enumerate(bands)]


@pytest.mark.parametrize(
    ("bands", "room", "sent", "left"),
    [
        ("AAAA", 2, ["t2", "t3"], []),
        ("ABAC", 2, ["t1", "t3"], []),
        ("ABAC", 3, ["t1", "t2", "t3"], []),
        ("BBBA", 2, ["t1", "t2"], ["t0"]),
        ("ABCB", 0, [], ["t1", "t2", "t3"]),
        ("", 5, [], []),
    ],
)
def test_pick(bands, room, sent, left):
    chosen, waiting = pick(scores(bands), room)
    assert [e["transaction_id"] for e in chosen] == sent
    assert [e["transaction_id"] for e in waiting] == left


def test_flagged_left_over_keep_only_the_newest():
    _, waiting = pick(scores("B" * (MAX_ITEMS_PER_TICK + 10)), 0)
    assert len(waiting) == MAX_ITEMS_PER_TICK
    assert waiting[-1]["transaction_id"] == f"t{MAX_ITEMS_PER_TICK + 9}"
    assert waiting[0]["transaction_id"] == "t10"
