"""The CLI's argument checking and exit codes, without a lock service."""

from __future__ import annotations

import pytest

from distlock import _cli
from tests.support.procs import free_port


def test_exit_codes_are_distinct_from_each_other_and_from_success() -> None:
    codes = [_cli.EXIT_USAGE, _cli.EXIT_UNAVAILABLE, _cli.EXIT_TIMEOUT, _cli.EXIT_LOST,
             _cli.EXIT_NOT_EXECUTABLE, _cli.EXIT_NOT_FOUND]
    assert len(set(codes)) == len(codes)
    assert 0 not in codes


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "--backend", "etcd", "lk", "--", "true"], "needs --endpoints"),
    (["run", "--backend", "etcd", "--endpoints", "http://127.0.0.1:1", "lk"], "no COMMAND"),
    (["run", "--backend", "etcd", "--endpoints", "ftp://x", "lk", "--", "true"],
     "endpoint must look like"),
])
def test_bad_arguments_exit_2_naming_the_problem(argv: list[str], message: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(argv) == _cli.EXIT_USAGE
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["run", "--backend", "zookeeper", "lk", "--", "true"],
    ["run", "--backend", "etcd", "--ttl", "-3", "lk", "--", "true"],
    ["run", "--backend", "etcd", "--timeout", "soon", "lk", "--", "true"],
])
def test_argparse_refuses_unknown_backends_and_bad_seconds(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _cli.main(argv)
    assert exited.value.code == 2


def test_an_unreachable_service_exits_69_before_running_anything(
        tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]) -> None:
    marker = f"{tmp_path}/ran"
    code = _cli.main(["run", "--backend", "etcd", "--endpoints",
                      f"http://127.0.0.1:{free_port()}", "--ttl", "1", "lk", "--",
                      "touch", marker])
    assert code == _cli.EXIT_UNAVAILABLE
    assert "cannot start a etcd session" in capsys.readouterr().err
