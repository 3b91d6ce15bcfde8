"""Which scores a live-stream tick sends (console.live.pick): flagged before ALLOW, the
newest first, in the order they came; the flagged left over wait, the ALLOW only count."""

from __future__ import annotations

import pytest

from console.live import MAX_WAITING, pick


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
    _, waiting = pick(scores("B" * (MAX_WAITING + 10)), 0)
    assert len(waiting) == MAX_WAITING
    assert waiting[-1]["transaction_id"] == f"t{MAX_WAITING + 9}"
    assert waiting[0]["transaction_id"] == "t10"


def test_a_burst_read_with_little_room_keeps_every_flagged_score_waiting():
    """40 flagged scores arriving when the budget has room for 5 (ALLOW scores just spent
    it): the other 35 wait for the next ticks rather than the oldest being dropped."""
    sent, waiting = pick(scores("A" * 10 + "B" * 40), 5)
    assert [e["transaction_id"] for e in sent] == [f"t{n}" for n in range(45, 50)]
    assert [e["transaction_id"] for e in waiting] == [f"t{n}" for n in range(10, 45)]
