"""Real processes for integration tests: free ports, start, wait on a condition, stop by PID.

Every server a test needs is started here on 127.0.0.1 with a free port and a temporary
directory, and is stopped by the PID we started (never by name, never a process we did
not start). Waiting is always on a condition (a port answering, a query returning);
the poll interval only paces the check, it never stands in for the condition.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn, TypeVar

import pytest

T = TypeVar("T")

LOCALHOST = "127.0.0.1"


def require_binary(*names: str) -> None:
    """Skip when a server binary is missing, but fail under CI=true: CI must run everything."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        missing_tool(f"missing binaries: {', '.join(missing)} "
                     "(run scripts/test.sh, which installs them)")


def missing_tool(message: str) -> NoReturn:
    """A server or tool a test needs is absent: a skip locally, a failure under CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """Distinct free ports; held open together so the kernel cannot hand one out twice."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOCALHOST, 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_until(condition: Callable[[], T | None], *, timeout: float, what: str,
               interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns a truthy value; fail naming ``what`` on timeout.

    Exceptions from the condition count as "not yet" (a server still starting refuses
    connections); the last one is reported if the deadline passes.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = condition()
            if result:
                return result
        except Exception as error:  # noqa: BLE001 - any failure means "not ready yet"
            last_error = error
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}{detail}")
        time.sleep(interval)


def port_open(port: int, host: str = LOCALHOST) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


class ManagedProcess:
    """A child process with its output in a log file, stopped by its own PID.

    ``start_new_session`` puts it in its own process group so that a test can freeze
    (SIGSTOP) or kill the whole thing without touching the test runner.
    """

    def __init__(self, name: str, argv: Sequence[str], *, log_dir: Path,
                 env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                        env=self.env, cwd=self.cwd, start_new_session=True)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.running():
            os.kill(self.pid, signum)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit code (None if never started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGCONT)  # a frozen process cannot handle SIGTERM
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL, as a crashed node or `kill -9` would end it."""
        if self.running():
            os.kill(self.pid, signal.SIGKILL)
            assert self.process is not None
            self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 120,
        input_text: str | None = None, check: bool = True,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; on failure the error carries its output."""
    result = subprocess.run(list(argv), env={**os.environ, **(env or {})}, timeout=timeout,
                            input=input_text, capture_output=True, text=True, check=False,
                            cwd=cwd)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}\n"
                           f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result
