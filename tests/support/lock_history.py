"""A shared history of lock holdings from many processes, and the checker over it.

Every holder (a thread in the test, a command run by ``python -m distlock run``, an
``etcdctl lock`` command) appends one JSON line per event to one file:
``acquired`` when it starts its critical section (with its fencing token) and
``released`` when it ends it. The test appends ``ended`` for a holder it killed or
froze: from that instant the holder can do nothing, so its critical section is over.

Timestamps are ``time.monotonic_ns()``: CLOCK_MONOTONIC is one clock for every process
on the machine, so intervals from different processes compare directly. A record is a
single ``write`` on an ``O_APPEND`` file descriptor, which Linux applies atomically for
lines this short, so concurrent writers never interleave.

:func:`check` proves the two safety properties of a fenced lock over the history:
no two critical sections overlap, and tokens strictly increase in grant order. The
recorded interval is the *inside* of the real holding (recorded after acquire
returned, before release was called), which is exactly the span the holder acts in.

Run as a program it is the critical section the tests hand to the CLI or etcdctl::

    python -m tests.support.lock_history hold --history F --who W [--hold S]
        [--token-env DISTLOCK_TOKEN] [--until-fifo PATH]
    python -m tests.support.lock_history fenced --history F --who W
        (--fence DIR | --etcd-fence URL[,URL...]@PREFIX) [--token-env DISTLOCK_TOKEN]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distlock import FencedStore, FileFencedStore, StaleTokenError
from distlock.etcd import EtcdFencedStore

ACQUIRED = "acquired"
RELEASED = "released"
ENDED = "ended"


class HistoryViolation(AssertionError):
    """The history shows a safety violation (or is malformed)."""


@dataclass(frozen=True)
class Interval:
    who: str
    token: int
    start: int
    end: int | None
    """None: still open when the history was read (never released nor ended)."""


class History:
    """Appends events to a file shared by every process of one test."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, who: str, event: str, token: int | None = None,
               **extra: Any) -> None:
        line = json.dumps({"who": who, "event": event, "token": token,
                           "t": time.monotonic_ns(), **extra}) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def events(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def acquisitions(self) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["event"] == ACQUIRED]


def intervals(events: Iterable[dict[str, Any]]) -> list[Interval]:
    """Pair each holder's acquired with its next released/ended, in time order."""
    open_by_who: dict[str, dict[str, Any]] = {}
    ended: set[str] = set()  # killed or frozen by the test: its later records are moot
    result: list[Interval] = []
    for event in sorted(events, key=lambda e: int(e["t"])):
        who, kind = str(event["who"]), event["event"]
        if kind == ACQUIRED:
            if who in open_by_who:
                raise HistoryViolation(f"{who} acquired again while still holding: {event}")
            if not isinstance(event.get("token"), int):
                raise HistoryViolation(f"acquisition without an integer token: {event}")
            open_by_who[who] = event
            ended.discard(who)
        elif kind in (RELEASED, ENDED):
            start = open_by_who.pop(who, None)
            if start is None:
                if kind == ENDED or who in ended:
                    continue  # ended before acquiring, or a frozen holder waking up
                raise HistoryViolation(f"{who} released without holding: {event}")
            if kind == ENDED:
                ended.add(who)
            result.append(Interval(who, int(start["token"]), int(start["t"]), int(event["t"])))
        # Other kinds ("write", ...) annotate the history; they open or close nothing.
    result.extend(Interval(who, int(e["token"]), int(e["t"]), None)
                  for who, e in open_by_who.items())
    return sorted(result, key=lambda i: i.start)


def check(events: Iterable[dict[str, Any]], *, allow_open: bool = False) -> list[Interval]:
    """Raise :class:`HistoryViolation` unless critical sections are disjoint and tokens
    strictly increase in the order they were granted; returns the intervals in order."""
    ordered = intervals(events)
    previous: Interval | None = None
    for interval in ordered:
        if interval.end is None and not allow_open:
            raise HistoryViolation(f"{interval.who} (token {interval.token}) never released "
                                   "and was not recorded as ended")
        if previous is not None:
            if previous.end is None or interval.start < previous.end:
                raise HistoryViolation(
                    f"overlap: {interval.who} (token {interval.token}) started at "
                    f"{interval.start} while {previous.who} (token {previous.token}) held "
                    f"until {previous.end}")
            if interval.token <= previous.token:
                raise HistoryViolation(
                    f"token did not increase: {previous.who} had {previous.token}, then "
                    f"{interval.who} got {interval.token}")
        previous = interval
    return ordered


def _token(env_name: str) -> int:
    try:
        return int(os.environ[env_name])
    except (KeyError, ValueError):
        raise SystemExit(f"lock_history: ${env_name} is not an integer token") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lock_history")
    parser.add_argument("mode", choices=("hold", "fenced"))
    parser.add_argument("--history", type=Path, required=True)
    parser.add_argument("--who", required=True)
    parser.add_argument("--token-env", default="DISTLOCK_TOKEN")
    parser.add_argument("--hold", type=float, default=0.0,
                        help="seconds of simulated work inside the critical section")
    parser.add_argument("--until-fifo", type=Path,
                        help="hold until the test opens and closes this FIFO (or kills us); "
                             "not stdin, because etcdctl lock gives its command /dev/null")
    parser.add_argument("--fence", type=Path, help="fenced mode: FileFencedStore directory")
    parser.add_argument("--etcd-fence", help="fenced mode: EtcdFencedStore as URLS@PREFIX")
    args = parser.parse_args(argv)
    history = History(args.history)
    token = _token(args.token_env)
    history.record(args.who, ACQUIRED, token, pid=os.getpid())
    if args.mode == "fenced":
        return _fenced(args, history, token)
    if args.hold:
        time.sleep(args.hold)  # the simulated work itself, not a wait for a condition
    if args.until_fifo:
        with args.until_fifo.open("rb") as fifo:  # blocks until the test opens it to write
            fifo.read()
    history.record(args.who, RELEASED, token)
    return 0


def fenced_store(directory: Path | None, etcd: str | None) -> FencedStore:
    """The store a fenced holder and the test both write to: a directory or etcd."""
    if etcd:
        endpoints, _, prefix = etcd.partition("@")
        return EtcdFencedStore(endpoints, prefix)
    if directory is None:
        raise SystemExit("lock_history fenced: give --fence DIR or --etcd-fence URLS@PREFIX")
    return FileFencedStore(directory)


def _fenced(args: argparse.Namespace, history: History, token: int) -> int:
    """Write once under the token, then write again each time a line arrives on stdin,
    recording whether the fenced store accepted it."""
    store = fenced_store(args.fence, args.etcd_fence)
    store.put(token, "data", f"{args.who}:{token}".encode())
    history.record(args.who, "write", token, accepted=True)
    for _line in sys.stdin:
        try:
            store.put(token, "data", f"{args.who}:{token}:late".encode())
        except StaleTokenError as error:
            history.record(args.who, "write", token, accepted=False, highest=error.highest)
        else:
            history.record(args.who, "write", token, accepted=True)
    history.record(args.who, RELEASED, token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
