"""`python -m bench` arguments: the documented forms work, bad ones stop before anything runs."""

from __future__ import annotations

import pytest

from bench.__main__ import NAMES, parse


def test_no_arguments_means_every_benchmark_in_order() -> None:
    assert parse([])[1] == NAMES
    assert parse(["all"])[1] == NAMES


def test_named_benchmarks_run_once_each_in_the_order_given() -> None:
    assert parse(["locks", "seeding", "locks"])[1] == ("locks", "seeding")


@pytest.mark.parametrize("argv", [["nope"], ["--size-mb", "0"], ["--handoffs", "many"]])
def test_bad_arguments_exit_2_naming_the_problem(argv: list[str],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse(argv)
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert argv[-1] in error or "at least 1" in error
