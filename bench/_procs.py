"""Process plumbing the benchmarks share: binaries present, pipelines, listening sockets.

Servers themselves come from ``tests/support`` (the same real mariadbd and etcd the
integration tests start), so a benchmark measures exactly what the tests check. What
is here is only what a benchmark needs on top: a clear error instead of a pytest skip
when a binary is missing, shell-free pipelines of real commands (so a stage's exit code
is never hidden by a pipe), and a way to know a listener is up without connecting to it
(an ``ncat -l`` without ``-k`` serves exactly one connection: a probe would eat it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


class BenchUnavailable(RuntimeError):
    """A benchmark cannot run here (missing binary); the message says what to install."""


def need(*binaries: str) -> None:
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        raise BenchUnavailable(f"missing binaries: {', '.join(missing)} "
                               "(scripts/test.sh installs them)")


# mariadbd's socket lives a few levels under the work dir, and a unix socket path must
# fit in 108 bytes: a deep --workdir fails inside mariadb-install-db with no useful hint.
_MAX_WORKDIR = 48


def workdir(prefix: str, parent: Path | None) -> Path:
    """A fresh temp dir for one benchmark run, short enough for the servers' sockets."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    if len(str(base)) > _MAX_WORKDIR:
        shutil.rmtree(base, ignore_errors=True)
        raise BenchUnavailable(f"work dir {base} is {len(str(base))} characters long; servers "
                               f"need a path of at most {_MAX_WORKDIR} for their unix sockets: "
                               "pass a shorter --workdir")
    return base


def listening(port: int) -> bool:
    """True when something LISTENs on TCP ``port`` (IPv4 or IPv6), without connecting."""
    wanted = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(wanted) and fields[3] == "0A":  # 0A = TCP_LISTEN
                return True
    return False


def start_pipeline(stages: Sequence[Sequence[str]], *,
                   envs: Sequence[Mapping[str, str] | None] | None = None,
                   log: Path) -> list[subprocess.Popen[bytes]]:
    """Start ``stages`` connected stdout->stdin; stderr of all goes to ``log``."""
    envs = envs or [None] * len(stages)
    processes: list[subprocess.Popen[bytes]] = []
    with log.open("ab") as errors:
        upstream = None
        for index, (argv, env) in enumerate(zip(stages, envs, strict=True)):
            last = index == len(stages) - 1
            process = subprocess.Popen(
                list(argv), stdin=upstream, stdout=subprocess.DEVNULL if last else subprocess.PIPE,
                stderr=errors, env={**os.environ, **(env or {})}, start_new_session=True)
            if upstream is not None:
                upstream.close()  # only the next stage holds the read end: EOF propagates
            upstream = process.stdout
            processes.append(process)
    return processes


def finish_pipeline(processes: Sequence[subprocess.Popen[bytes]], *, what: str, log: Path,
                    timeout: float, ok_codes: Mapping[int, frozenset[int]] | None = None) -> None:
    """Wait for every stage; raise naming the failed stage and the log tail."""
    deadline = time.monotonic() + timeout
    failed: list[str] = []
    for index, process in enumerate(processes):
        try:
            code = process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in processes:
                if other.poll() is None:
                    other.kill()
                    other.wait()
            raise RuntimeError(f"{what}: timed out after {timeout:.0f}s\n{tail(log)}") from None
        allowed = (ok_codes or {}).get(index, frozenset({0}))
        if code not in allowed:
            argv = process.args if isinstance(process.args, list) else [str(process.args)]
            failed.append(f"{argv[0]} exited {code}")
    if failed:
        raise RuntimeError(f"{what}: {'; '.join(failed)}\n{tail(log)}")


def stop_all(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """Stop what a failed step left running: only these PIDs, which we started."""
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def tail(log: Path, lines: int = 20) -> str:
    if not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def tree_bytes(root: Path, *, exclude_prefixes: Sequence[str] = ()) -> int:
    """Apparent size of every regular file under ``root`` (what a copy has to move)."""
    total = 0
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and \
                not any(path.name.startswith(p) for p in exclude_prefixes):
            total += path.stat().st_size
    return total


def read_through(root: Path) -> None:
    """Read every file once so each method starts from the same (warm) page cache."""
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as handle:
                while handle.read(1 << 20):
                    pass


__all__ = ["BenchUnavailable", "finish_pipeline", "listening", "need", "read_through",
           "start_pipeline", "stop_all", "tail", "tree_bytes", "workdir"]
