"""Whose primary an up keeps: the record's, unless the user changed ``mysql.primary``.

The failover arbiter moves the primary without touching the stack; an up that then moved
it back to the stack's ``primary_ordinal`` would fight the arbiter. These pin
:func:`decide_primary` (used by both Diff and Update); the real provider against real
servers is tests/integration/test_switchover.py's failover-adoption test.
"""

from __future__ import annotations

import pytest

from components.mysql._replication import decide_primary


@pytest.mark.parametrize(("previous", "wanted", "recorded", "kind", "target"), [
    # Nothing moved, nothing asked.
    (0, 0, 0, "keep", 0),
    # A failover moved the record to 1; the stack still says 0: adopt 1, never move back.
    (0, 0, 1, "adopt", 1),
    (2, 2, 0, "adopt", 0),
    # The user changed mysql.primary: a switchover from wherever the record is.
    (0, 2, 0, "switchover", 2),
    (0, 2, 1, "switchover", 2),
    # The user set mysql.primary to what the arbiter chose: nothing to move.
    (0, 1, 1, "keep", 1),
    # First up (no applied state): the stack's primary is the wish.
    (None, 0, 0, "keep", 0),
    (None, 1, 0, "switchover", 1),
])
def test_decision(previous: int | None, wanted: int, recorded: int, kind: str,
                  target: int) -> None:
    decision = decide_primary(previous=previous, wanted=wanted, recorded=recorded)
    assert (decision.kind, decision.target) == (kind, target)


def test_adopting_says_so_and_names_what_to_set() -> None:
    message = decide_primary(previous=0, wanted=0, recorded=2).message
    assert "no switchover" in message
    assert "set mysql.primary to 2" in message


def test_a_switchover_names_both_ordinals() -> None:
    message = decide_primary(previous=0, wanted=2, recorded=1).message
    assert "from ordinal 1 to 2" in message
