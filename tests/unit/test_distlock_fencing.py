"""FileFencedStore: the reference FencedStore refuses stale tokens and bad input."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest

from distlock import FileFencedStore, StaleTokenError


def test_equal_and_higher_tokens_write_lower_ones_are_refused(tmp_path: Path) -> None:
    store = FileFencedStore(tmp_path)
    assert store.highest_token() == 0
    store.put(7, "data", b"first")
    store.put(7, "data", b"same grant, second write")
    store.put(9, "data", b"newer holder")
    with pytest.raises(StaleTokenError) as refused:
        store.put(8, "data", b"stale")
    assert (refused.value.token, refused.value.highest) == (8, 9)
    assert store.get("data") == b"newer holder"
    assert store.highest_token() == 9


def test_the_highest_token_survives_a_new_store_object(tmp_path: Path) -> None:
    FileFencedStore(tmp_path).put(12, "a", b"x")
    with pytest.raises(StaleTokenError):
        FileFencedStore(tmp_path).put(11, "b", b"y")  # the fence covers every key
    assert FileFencedStore(tmp_path).get("b") is None


@pytest.mark.parametrize("token", [0, -1, True, "5", 1.5])
def test_a_token_must_be_a_positive_integer(tmp_path: Path, token: object) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        FileFencedStore(tmp_path).put(token, "data", b"x")  # type: ignore[arg-type]


@pytest.mark.parametrize("key", ["", "../escape", "a/b", ".hidden"])
def test_keys_cannot_leave_the_directory(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="file fence key"):
        FileFencedStore(tmp_path).put(1, key, b"x")


def test_a_writer_stuck_holding_the_store_lock_is_reported_not_waited_on(tmp_path: Path) -> None:
    store = FileFencedStore(tmp_path, lock_timeout=0.2)
    with (tmp_path / ".fence.lock").open("a") as stuck:
        fcntl.flock(stuck, fcntl.LOCK_EX)
        with pytest.raises(TimeoutError, match="stayed locked"):
            store.put(1, "data", b"x")
