"""``python -m distlock``: run a command while holding a lock, or show a lock's state.

    python -m distlock run --backend etcd --endpoints URL[,URL...] [--ttl SECONDS]
                           [--timeout SECONDS] NAME -- COMMAND [ARG...]
    python -m distlock status --backend etcd --endpoints URL[,URL...] NAME

``run`` waits for NAME (FIFO), starts COMMAND with ``DISTLOCK_TOKEN`` (the fencing
token), ``DISTLOCK_NAME`` and ``DISTLOCK_HOLDER`` in its environment, releases when it
exits and exits with COMMAND's code. Its own outcomes have distinct codes (sysexits
where one fits), so a script can tell "the job failed" from "the job never ran":

====  =====================================================================
code  meaning
====  =====================================================================
2     bad arguments, NAME included (nothing was locked, no session opened)
69    the lock service is unreachable (within ``--timeout`` when one is given),
      or the session died while waiting
75    ``--timeout`` passed before the lock was granted (COMMAND never ran)
76    the lock was lost while COMMAND ran; COMMAND was sent SIGTERM (SIGKILL
      after ``--kill-after`` seconds) because it no longer had exclusive access
78    the lock service answered and refused (etcd: "too large lease TTL", a
      permission; Kubernetes: no Lock CRD, RBAC): retrying unchanged will not help
126   COMMAND is not executable; 127: COMMAND was not found
128+N distlock (waiting) or COMMAND was ended by signal N
====  =====================================================================

``--timeout`` bounds the whole wait: opening the session (the etcd lease grant) and
every request while queued, so an unreachable service ends the wait at the timeout
too. Leaving the queue and ending the session afterwards are not cut short: they
are what keeps the next waiter from waiting a TTL for nothing.

69 and 78 are kept apart because a script reacts differently: an outage is "retry
later", a refusal is "fix the arguments or the service's configuration" (78 is
sysexits' EX_CONFIG).

SIGTERM, SIGINT and SIGHUP stop a wait cleanly (the queue slot is deleted) and are
forwarded to a running COMMAND. If distlock itself is SIGKILLed, COMMAND is not told
(as with ``etcdctl lock``); run both in one process group or container so that they
die together, and let fencing tokens reject anything that outlives the lease.

Backends are looked up by name in :mod:`distlock._registry`, so a new one needs no
change here beyond the options it reads (add a flag to ``_backend_flags``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from types import FrameType

from distlock._backend import BackendOptions, LockBackend
from distlock._errors import BackendUnavailable, DistlockError, LockLost, LockTimeout
from distlock._lock import Lock
from distlock._registry import BACKENDS, check_name, inspect, open_backend

EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69
EXIT_TIMEOUT = 75
EXIT_LOST = 76
EXIT_REFUSED = 78
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        options = _options(args)
        check_name(args.backend, args.name)
    except ValueError as error:
        _say(str(error))
        return EXIT_USAGE
    if args.subcommand == "status":
        return _status(args, options)
    return _run(args, options)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m distlock",
                                     description="Fair, fenced distributed locks.")
    commands = parser.add_subparsers(dest="subcommand", required=True)
    run = commands.add_parser("run", help="run COMMAND while holding lock NAME")
    _backend_flags(run)
    run.add_argument("--timeout", type=_seconds, default=None,
                     help="give up (exit 75) if not granted within SECONDS; default: wait")
    run.add_argument("--kill-after", type=_seconds, default=10.0,
                     help="after the lock is lost, SIGKILL COMMAND if it outlives SIGTERM "
                          "by SECONDS (default 10)")
    run.add_argument("name", metavar="NAME")
    run.add_argument("command", metavar="COMMAND", nargs=argparse.REMAINDER,
                     help="after --: the command and its arguments")
    status = commands.add_parser("status", help="print NAME's holder and queue as JSON")
    _backend_flags(status)
    status.add_argument("name", metavar="NAME")
    return parser


def _backend_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", required=True, choices=sorted(BACKENDS))
    parser.add_argument("--endpoints", default="",
                        help="etcd: comma-separated client URLs (http://host:2379,...)")
    parser.add_argument("--ttl", type=_seconds, default=10.0,
                        help="seconds a crashed holder keeps the lock (default 10)")
    parser.add_argument("--namespace", default=None, help="kubernetes: Lock namespace")
    parser.add_argument("--kubeconfig", default=None,
                        help="kubernetes: kubeconfig path (default: $KUBECONFIG, "
                             "~/.kube/config or in-cluster)")
    parser.add_argument("--identity", default=None, help="a readable holder name")
    parser.add_argument("--cacert", default=None, help="etcd TLS: CA bundle (PEM)")
    parser.add_argument("--cert", default=None, help="etcd TLS: client certificate (PEM)")
    parser.add_argument("--key", default=None, help="etcd TLS: client key (PEM)")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"seconds must be a finite number >= 0: {text!r}")
    return value


def _options(args: argparse.Namespace) -> BackendOptions:
    endpoints = tuple(e.strip() for e in args.endpoints.split(",") if e.strip())
    if args.backend == "etcd" and not endpoints:
        raise ValueError("--backend etcd needs --endpoints http://host:2379[,...]")
    if args.subcommand == "run":
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            raise ValueError("no COMMAND given: python -m distlock run ... NAME -- COMMAND")
        args.command = command
    return BackendOptions(endpoints=endpoints, ttl=args.ttl, namespace=args.namespace,
                          kubeconfig=args.kubeconfig, identity=args.identity,
                          ca_file=args.cacert, cert_file=args.cert, key_file=args.key,
                          open_timeout=getattr(args, "timeout", None))


def _say(message: str) -> None:
    print(f"distlock: {message}", file=sys.stderr)  # noqa: T201 - a CLI reports on stderr


def _failed(error: DistlockError, doing: str) -> int:
    """Report a session or request that failed, and the exit code its kind gets."""
    if isinstance(error, BackendUnavailable | LockLost):
        _say(f"{doing}: {'unreachable' if isinstance(error, BackendUnavailable) else 'lost'}: "
             f"{error}")
        return EXIT_UNAVAILABLE
    _say(f"{doing}: refused: {error}")
    return EXIT_REFUSED


def _close(backend: LockBackend) -> None:
    try:
        backend.close()
    except DistlockError as error:
        # The outcome the caller must see is the command's, not this.
        _say(f"could not end the session, its locks expire on their own: {error}")


def _open(args: argparse.Namespace, options: BackendOptions) -> LockBackend | int:
    """A session, or the exit code to return when there is none."""
    try:
        return open_backend(args.backend, options)
    except ValueError as error:
        _say(str(error))
        return EXIT_USAGE
    except DistlockError as error:
        return _failed(error, f"cannot start a {args.backend} session")


def _status(args: argparse.Namespace, options: BackendOptions) -> int:
    try:
        state = inspect(args.backend, options, args.name)
    except ValueError as error:
        _say(str(error))
        return EXIT_USAGE
    except DistlockError as error:
        return _failed(error, f"cannot read lock {args.name!r}")
    print(json.dumps(asdict(state)))  # noqa: T201 - the command's output
    return 0


class _Runner:
    """Signal and lost-lock handling around one COMMAND."""

    def __init__(self, kill_after: float) -> None:
        self.cancel = threading.Event()
        self.signalled: int | None = None
        self.lost: str | None = None
        self.child: subprocess.Popen[bytes] | None = None
        self._kill_after = kill_after

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signalled = signum
        self.cancel.set()
        child = self.child
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    def on_lost(self, reason: str) -> None:
        self.lost = reason
        child = self.child
        _say(f"lock lost ({reason}); terminating COMMAND")
        if child is not None and child.poll() is None:
            child.terminate()
            timer = threading.Timer(self._kill_after, self._kill)
            timer.daemon = True
            timer.start()

    def _kill(self) -> None:
        child = self.child
        if child is not None and child.poll() is None:
            child.kill()


def _run(args: argparse.Namespace, options: BackendOptions) -> int:
    runner = _Runner(args.kill_after)
    previous = {sig: signal.signal(sig, runner.on_signal) for sig in _FORWARDED}
    # One deadline for opening and queueing: --timeout bounds the whole wait.
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    try:
        backend = _open(args, options)
        if isinstance(backend, int):
            return backend
        try:
            return _hold_and_run(args, backend, runner, deadline)
        finally:
            _close(backend)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _hold_and_run(args: argparse.Namespace, backend: LockBackend, runner: _Runner,
                  deadline: float | None) -> int:
    lock = backend.lock(args.name, on_lost=runner.on_lost)
    left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
    try:
        token = lock.acquire(left, cancel=runner.cancel)
    except LockTimeout:
        if runner.signalled is not None:
            return 128 + runner.signalled
        _say(f"lock {args.name!r} not granted within --timeout {args.timeout:g}s")
        return EXIT_TIMEOUT
    except DistlockError as error:
        return _failed(error, f"gave up waiting for {args.name!r}")
    try:
        code = _run_command(args, lock, token, runner)
    finally:
        try:
            lock.release()
        except DistlockError as error:
            # The lease (etcd) or renewal deadline (Kubernetes) frees it anyway.
            _say(f"release failed, the lock expires on its own: {error}")
    if runner.lost is not None:
        return EXIT_LOST
    return code


def _run_command(args: argparse.Namespace, lock: Lock, token: int, runner: _Runner) -> int:
    grant = lock.grant
    assert grant is not None  # acquire returned, so this Lock holds a grant
    env = {**os.environ, "DISTLOCK_TOKEN": str(token), "DISTLOCK_NAME": args.name,
           "DISTLOCK_HOLDER": grant.holder}
    try:
        runner.child = subprocess.Popen(args.command, env=env)
    except FileNotFoundError:
        _say(f"command not found: {args.command[0]}")
        return EXIT_NOT_FOUND
    except PermissionError:
        _say(f"command not executable: {args.command[0]}")
        return EXIT_NOT_EXECUTABLE
    if lock.lost.is_set():  # lost before there was a child to terminate
        runner.on_lost(lock.lost.reason or "lost")
    code = runner.child.wait()
    return 128 - code if code < 0 else code
