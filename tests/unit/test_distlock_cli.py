"""The CLI's argument checking and exit codes; a real etcd where the server is involved.

Bad arguments (NAME included) exit 2 before any session is opened; a request the server
answered and refused exits 78, never 69 "unreachable"; ``--timeout`` bounds opening the
session and every request made while queued. Time is never measured: a bound shows in
the budget each request was given (or the one the error reports).
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from distlock import _cli
from distlock._etcd_grpc import Client
from distlock.etcd import EtcdBackend
from tests.support.etcd import gateway
from tests.support.procs import free_port


def _leases_granted(endpoint: str) -> int:
    """etcd's own count of the leases it has granted (its /metrics counter)."""
    with urllib.request.urlopen(f"{endpoint}/metrics", timeout=5) as response:  # noqa: S310
        text = response.read().decode()
    found = re.search(r"^etcd_debugging_lease_granted_total (\S+)$", text, re.MULTILINE)
    assert found is not None, "etcd exports no etcd_debugging_lease_granted_total"
    return int(float(found.group(1)))


def _leases(endpoint: str) -> set[int]:
    return {int(lease["ID"]) for lease in gateway(endpoint, "/v3/lease/leases", {})
            .get("leases", [])}


def _unreachable() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_exit_codes_are_distinct_from_each_other_and_from_success() -> None:
    codes = [_cli.EXIT_USAGE, _cli.EXIT_UNAVAILABLE, _cli.EXIT_TIMEOUT, _cli.EXIT_LOST,
             _cli.EXIT_REFUSED, _cli.EXIT_NOT_EXECUTABLE, _cli.EXIT_NOT_FOUND]
    assert len(set(codes)) == len(codes)
    assert 0 not in codes


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "--backend", "etcd", "lk", "--", "true"], "needs --endpoints"),
    (["run", "--backend", "etcd", "--endpoints", "http://127.0.0.1:1", "lk"], "no COMMAND"),
    (["run", "--backend", "etcd", "--endpoints", "ftp://x", "lk", "--", "true"],
     "endpoint must look like"),
    # Larger than the int64 the gateway carries: refused here, it could not even be sent.
    (["run", "--backend", "etcd", "--endpoints", "http://127.0.0.1:1", "--ttl", "1e300", "lk",
      "--", "true"], "etcd lock ttl must be at most"),
    (["status", "--backend", "kubernetes", "--kubeconfig", "/nonexistent", "a\tb"],
     "printable characters"),
    (["run", "--backend", "kubernetes", "--kubeconfig", "/nonexistent", "x" * 1025, "--",
      "true"], "at most 1024 printable characters"),
])
def test_bad_arguments_exit_2_naming_the_problem(argv: list[str], message: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(argv) == _cli.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_kubeconfig_files_missing_or_not_yaml_exit_2_naming_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing"
    assert _cli.main(["status", "--backend", "kubernetes", "--kubeconfig", str(missing),
                      "lk"]) == _cli.EXIT_USAGE
    assert f"kubeconfig {str(missing)!r} does not exist" in capsys.readouterr().err
    broken = tmp_path / "kubeconfig"
    broken.write_text("users:\n- user: {token: secret-token-text\n  bad: [\n")
    assert _cli.main(["status", "--backend", "kubernetes", "--kubeconfig", str(broken),
                      "lk"]) == _cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"kubeconfig {str(broken)!r} is not valid YAML at line" in err
    assert "secret-token-text" not in err


def test_tls_files_that_are_not_pem_exit_2_naming_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    code = _cli.main(["status", "--backend", "etcd", "--endpoints", "https://127.0.0.1:1",
                      "--cacert", str(junk), "lk"])
    assert code == _cli.EXIT_USAGE
    assert f"CA file {str(junk)!r} is not a PEM CA bundle" in capsys.readouterr().err


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
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "ran"
    code = _cli.main(["run", "--backend", "etcd", "--endpoints", _unreachable(), "--ttl", "1",
                      "lk", "--", "touch", str(marker)])
    assert code == _cli.EXIT_UNAVAILABLE
    assert "cannot start a etcd session: unreachable" in capsys.readouterr().err
    assert not marker.exists()


def test_timeout_bounds_opening_the_session_on_a_closed_port(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Opening used to retry for the TTL (at least 5 s) whatever --timeout said."""
    marker = tmp_path / "ran"
    code = _cli.main(["run", "--backend", "etcd", "--endpoints", _unreachable(), "--ttl", "30",
                      "--timeout", "1", "lk", "--", "touch", str(marker)])
    err = capsys.readouterr().err
    assert code == _cli.EXIT_UNAVAILABLE, err
    budget = re.search(r"failed on every endpoint for ([0-9.]+)s", err)
    assert budget is not None, err
    assert float(budget.group(1)) <= 1.0, f"the lease grant outlived --timeout 1: {err}"
    assert not marker.exists()


@pytest.mark.integration
@pytest.mark.parametrize("subcommand", ["run", "status"])
def test_an_empty_lock_name_exits_2_before_a_session_is_opened(
        etcd: str, subcommand: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [subcommand, "--backend", "etcd", "--endpoints", etcd, ""]
    if subcommand == "run":
        argv += ["--", "true"]
    before = _leases(etcd)
    assert _cli.main(argv) == _cli.EXIT_USAGE
    assert "lock name must be a non-empty string" in capsys.readouterr().err
    assert _leases(etcd) == before, "a session (lease) was opened for a bad name"


@pytest.mark.integration
def test_a_ttl_etcd_refuses_exits_78_with_etcds_reason(
        etcd: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Only `run` asks etcd for a lease; `status` reads without one (the next test).
    marker = tmp_path / "ran"
    argv = ["run", "--backend", "etcd", "--endpoints", etcd, "--ttl", "1e12", "lk",
            "--", "touch", str(marker)]
    code = _cli.main(argv)
    err = capsys.readouterr().err
    assert code == _cli.EXIT_REFUSED, err
    assert "too large lease TTL" in err
    assert "unreachable" not in err
    assert not marker.exists()


@pytest.mark.integration
def test_status_reads_the_queue_without_granting_a_lease(
        etcd: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`status` used to open a session, a lease: a write, just to look."""
    holder = EtcdBackend([etcd], ttl=10)
    try:
        grant = holder.acquire("looked-at", timeout=5)
        assert grant is not None
        before = _leases_granted(etcd)
        assert _cli.main(["status", "--backend", "etcd", "--endpoints", etcd,
                          "looked-at"]) == 0
        # Counted by etcd: a lease granted and revoked within the command leaves no trace
        # in the lease list.
        assert _leases_granted(etcd) == before, "status granted a lease"
        state = json.loads(capsys.readouterr().out)
        assert state["holder"] == grant.holder
        assert state["token"] == grant.token
        assert state["waiters"] == []
    finally:
        holder.close()


def test_status_of_an_unreachable_etcd_exits_69(capsys: pytest.CaptureFixture[str]) -> None:
    code = _cli.main(["status", "--backend", "etcd", "--endpoints", _unreachable(),
                      "--ttl", "1", "lk"])
    assert code == _cli.EXIT_UNAVAILABLE
    assert "cannot read lock 'lk': unreachable" in capsys.readouterr().err


@pytest.mark.integration
def test_a_waiters_requests_end_by_its_timeout(etcd: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Each request an acquire makes while queued may retry only until its timeout: a
    member that stops answering mid-wait must not hold the waiter for the TTL."""
    holder = EtcdBackend([etcd], ttl=10)
    waiter = EtcdBackend([etcd], ttl=10, recheck=0.2)
    budgets: list[tuple[str, float]] = []
    real_call = Client._call

    def recording_call(self: Client, method: str, request: Any, response_type: Any,
                       timeout: float) -> Any:
        if method.startswith("/etcdserverpb.KV/"):
            budgets.append((method, timeout))
        return real_call(self, method, request, response_type, timeout)

    try:
        grant = holder.acquire("bounded", timeout=5)
        assert grant is not None
        monkeypatch.setattr(Client, "_call", recording_call)
        assert waiter.acquire("bounded", timeout=1) is None
        monkeypatch.undo()
        queued = budgets[:-1]  # the last is the waiter leaving the queue, after the wait
        assert len(queued) >= 2, budgets  # the enqueue and at least one re-check
        assert all(budget <= 1.0 for _, budget in queued), budgets
        holder.release(grant)
    finally:
        waiter.close()
        holder.close()
