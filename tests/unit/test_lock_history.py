"""The history checker must catch every violation it claims to, or the suite proves nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.lock_history import (
    ACQUIRED,
    ENDED,
    RELEASED,
    History,
    HistoryViolation,
    check,
)


def event(who: str, kind: str, t: int, token: int | None = None) -> dict[str, Any]:
    return {"who": who, "event": kind, "t": t, "token": token}


def test_disjoint_sections_with_increasing_tokens_pass() -> None:
    intervals = check([event("a", ACQUIRED, 1, 5), event("a", RELEASED, 2),
                       event("b", ACQUIRED, 3, 9), event("b", RELEASED, 4)])
    assert [(i.who, i.token) for i in intervals] == [("a", 5), ("b", 9)]


def test_overlap_is_a_violation() -> None:
    with pytest.raises(HistoryViolation, match="overlap"):
        check([event("a", ACQUIRED, 1, 5), event("b", ACQUIRED, 2, 9),
               event("a", RELEASED, 3), event("b", RELEASED, 4)])


@pytest.mark.parametrize("second", [5, 4])
def test_a_token_that_does_not_increase_is_a_violation(second: int) -> None:
    with pytest.raises(HistoryViolation, match="token did not increase"):
        check([event("a", ACQUIRED, 1, 5), event("a", RELEASED, 2),
               event("b", ACQUIRED, 3, second), event("b", RELEASED, 4)])


def test_a_holder_never_released_is_a_violation_unless_allowed() -> None:
    events = [event("a", ACQUIRED, 1, 5)]
    with pytest.raises(HistoryViolation, match="never released"):
        check(events)
    assert check(events, allow_open=True)[0].end is None


def test_anyone_starting_after_an_open_holder_overlaps_it() -> None:
    with pytest.raises(HistoryViolation, match="overlap"):
        check([event("a", ACQUIRED, 1, 5), event("b", ACQUIRED, 3, 9),
               event("b", RELEASED, 4)], allow_open=True)


def test_ended_closes_a_killed_holder_and_its_late_release_is_moot() -> None:
    intervals = check([event("a", ACQUIRED, 1, 5), event("a", ENDED, 2),
                       event("b", ACQUIRED, 3, 9), event("a", RELEASED, 4),
                       event("b", RELEASED, 5)])
    assert [(i.who, i.end) for i in intervals] == [("a", 2), ("b", 5)]


def test_release_without_acquire_and_double_acquire_are_malformed() -> None:
    with pytest.raises(HistoryViolation, match="without holding"):
        check([event("a", RELEASED, 1)])
    with pytest.raises(HistoryViolation, match="again while still holding"):
        check([event("a", ACQUIRED, 1, 5), event("a", ACQUIRED, 2, 6)])


def test_records_from_the_file_come_back_in_order(tmp_path: Any) -> None:
    history = History(tmp_path / "h.jsonl")
    history.record("a", ACQUIRED, 3)
    history.record("a", "write", 3, accepted=True)
    history.record("a", RELEASED, 3)
    assert [e["event"] for e in history.events()] == [ACQUIRED, "write", RELEASED]
    assert len(check(history.events())) == 1
