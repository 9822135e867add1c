"""Planned switchover: move the primary to another ordinal without losing a commit.

The sequence, run by ReplicationInit under the per-cluster lock (the caller has already
refused every bad input and checked every server, see ``replication._preflight``):

1. claim the epoch and fence: write the record (no primary, new epoch, previous = the old
   primary) with compare-and-swap, before any server changes;
2. make the old primary read-only (MariaDB ``read_only``: no account of clients holds
   READ ONLY ADMIN; MySQL ``super_read_only``), give client sessions ``grace_seconds``
   to finish, then end the rest;
3. wait until the candidate has applied the old primary's whole GTID position, at most
   ``timeout_seconds``; on timeout roll back: the record names the old primary again
   (same epoch, compare-and-swap) and then it becomes writable again, nothing else was
   changed, and the error says how far behind the candidate was;
4. promote: stop and clear the candidate's replication, record (new primary, epoch),
   make it writable; repoint every other server, the old primary included, with GTID
   auto-positioning;
5. move the role labels (when a labeller is given).

Why this order: the record names no primary from before the old primary is demoted until
the candidate holds every commit the old primary acknowledged, and it names the candidate
before the candidate is writable. So at no time does the record name a server that may
lack an acknowledged commit, and a server is writable only while the record names it. A
run that dies in between leaves every server read-only and the record fenced (or naming
a primary that has all the data): the next ``pulumi up`` (a newer epoch) starts from the
record's ``authority`` (``previous`` while fenced) and makes it writable, or finishes. Nothing is
ever writable under an epoch that is not the record's: :func:`_record.fence` runs before
every topology write, so a runner paused past its lock lease stops at its next step.

Why the read-only step comes before the wait: the position waited for is read after
the old primary stopped accepting writes, so it is final; a wait on a moving position
either never ends or misses the last commits.

Everything that talks to a server goes through :class:`Servers`, which the provider
implements with pymysql; the statements themselves are the dialect's (unit-tested per
flavor in ``tests/unit/test_switchover.py``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from components.mysql._record import PrimaryRecord, RecordStore, fence
from components.mysql._replication_sql import (
    Dialect,
    Statement,
    missing_gtids,
    not_contained,
)
from components.mysql.flavor import Flavor

# How often the old primary's sessions are looked at during the grace period, and how
# long one slice of the candidate's GTID wait blocks (a stopped thread is seen at once).
_GRACE_POLL_SECONDS = 0.05
_WAIT_SLICE_SECONDS = 1

# The statements run as the topology account, which bootstrap-users.sh creates
# (scripts/lib.sh, bootstrap_users_sql): what SET GLOBAL read_only, KILL of other users'
# sessions and the replication statements need, and nothing that reads or writes data.
# Application and admin accounts never get these (READ ONLY ADMIN would let them write on
# a read-only server).


class SwitchoverError(RuntimeError):
    """The switchover stopped; the message says where, and what state it left."""


class Session(Protocol):
    def run(self, statement: Statement) -> list[dict[str, Any]]: ...

    def one(self, statement: Statement) -> dict[str, Any] | None: ...


class Servers(Protocol):
    """Connections to the cluster's servers by ordinal, as the topology account."""

    def session(self, ordinal: int, *, read_timeout: int = 60
                ) -> contextlib.AbstractContextManager[Session]: ...

    def label(self, ordinal: int) -> str: ...


@dataclass(frozen=True)
class Source:
    """How replicas reach one ordinal, and the replication account they use."""

    host: str
    port: int
    user: str
    password: str


@dataclass(frozen=True)
class Plan:
    old: int
    new: int
    ordinals: tuple[int, ...]      # every server of the cluster
    epoch: int
    grace_seconds: float
    timeout_seconds: float
    topology_user: str
    source: Source                 # the new primary, as the others will reach it

    @property
    def others(self) -> tuple[int, ...]:
        return tuple(o for o in self.ordinals if o != self.new)


@dataclass(frozen=True)
class Outcome:
    record: PrimaryRecord
    # The old primary's last position: every replica has it or will receive it.
    position: str
    killed_sessions: int


Labeller = Callable[[int, int], None]  # (primary ordinal, epoch): move the role labels


def _apply(session: Session, statements: Sequence[Statement]) -> None:
    for statement in statements:
        session.run(statement)


def _end_sessions(session: Session, dialect: Dialect, plan: Plan) -> int:
    """Wait up to the grace period for client sessions to leave, then end the rest."""
    deadline = time.monotonic() + plan.grace_seconds
    query = dialect.sessions_of_others(plan.topology_user)
    while True:
        rows = session.run(query)
        if not rows:
            return 0
        if time.monotonic() >= deadline:
            break
        # No server-side wait exists for "every other session has gone": poll briefly.
        time.sleep(_GRACE_POLL_SECONDS)
    killed = 0
    for row in rows:
        with contextlib.suppress(RuntimeError):  # it may have ended by itself meanwhile
            session.run(dialect.kill(int(row["id"])))
            killed += 1
    return killed


def _wait_applied(servers: Servers, dialect: Dialect, plan: Plan, position: str,
                  old_executed: str) -> None:
    """Block until the candidate applied ``position``; SwitchoverError on timeout."""
    deadline = time.monotonic() + plan.timeout_seconds
    with servers.session(plan.new, read_timeout=_WAIT_SLICE_SECONDS + 30) as candidate:
        while True:
            remaining = deadline - time.monotonic()
            seconds = max(1, min(_WAIT_SLICE_SECONDS, int(remaining) or 1))
            row = candidate.one(dialect.wait_for(position, seconds)) or {}
            if dialect.wait_reached(row.get("result")):
                return
            if time.monotonic() >= deadline:
                executed = dialect.executed_set(candidate.one(dialect.executed))
                status = dialect.parse_status(candidate.one(dialect.status),
                                              candidate.one(dialect.replica_variables) or {})
                behind = missing_gtids(dialect.flavor, old_executed, executed)
                raise SwitchoverError(
                    f"{servers.label(plan.new)} did not apply the old primary's position "
                    f"{position!r} within switchoverTimeoutSeconds={plan.timeout_seconds:g}: "
                    f"it lacks {behind or 'nothing readable'} and reports "
                    f"lag {status.lag_seconds}s (IO thread {status.io_state}, SQL thread "
                    f"{'running' if status.sql_running else 'stopped'})")


@dataclass
class _Held:
    """The record as this run last wrote it: the expected version of its next write."""

    record: PrimaryRecord | None


@contextlib.contextmanager
def _rollback_on_failure(servers: Servers, dialect: Dialect, plan: Plan,
                         store: RecordStore, held: _Held) -> Iterator[None]:
    """Give the old primary back its record and writes if anything fails before the
    promotion; the record is restored first, so the old primary is never writable while
    the record is fenced."""
    try:
        yield
    # Every failure here is a RuntimeError (server, record and fence errors alike).
    except RuntimeError as error:
        try:
            # A newer epoch owns the cluster now: say so, and leave everything to it.
            fence(store, plan.epoch, f"giving {servers.label(plan.old)} the record back")
            held.record = store.write(plan.old, plan.epoch, held.record)
            fence(store, plan.epoch, f"making {servers.label(plan.old)} writable again")
            with servers.session(plan.old) as old:
                _apply(old, dialect.writable)
        except RuntimeError as undo:
            raise SwitchoverError(
                f"switchover {plan.old} -> {plan.new} (epoch {plan.epoch}) failed: {error}; "
                f"and rolling back failed too: {undo}. The old primary may be read-only: run "
                "`pulumi up` again (it makes the recorded primary writable)") from None
        raise SwitchoverError(
            f"switchover {plan.old} -> {plan.new} (epoch {plan.epoch}) rolled back: {error}. "
            f"{servers.label(plan.old)} is the primary and writable again; nothing else was "
            "changed") from None


def switchover(servers: Servers, dialect: Dialect, plan: Plan, store: RecordStore, *,
               record: PrimaryRecord | None, labeller: Labeller | None = None) -> Outcome:
    """Run steps 1-5 (module docstring); the caller holds the per-cluster lock.

    ``record`` is the record as the caller read it (None: never written); a write since
    makes step 1's compare-and-swap fail with :class:`RecordConflict`, changing nothing.
    """
    # 1. The epoch is claimed, and the record fenced, before the first server changes.
    held = _Held(store.write(None, plan.epoch, record, previous=plan.old))
    with _rollback_on_failure(servers, dialect, plan, store, held):
        # 2. The old primary stops accepting writes; the position it reports is final.
        fence(store, plan.epoch, f"making {servers.label(plan.old)} read-only")
        with servers.session(plan.old) as old:
            _apply(old, dialect.read_only_on)
            killed = _end_sessions(old, dialect, plan)
            position = dialect.position_from(old.one(dialect.primary_position))
            old_executed = dialect.executed_set(old.one(dialect.executed))
        # 3. Nothing is lost: the candidate holds every acknowledged commit.
        _wait_applied(servers, dialect, plan, position, old_executed)
        fence(store, plan.epoch, f"promoting {servers.label(plan.new)}")
        with servers.session(plan.new) as candidate:
            candidate.run(dialect.stop)
        # 4. The record names the new primary before it is writable; a run overtaken
        # since its last fence loses this compare-and-swap and changes nothing more.
        held.record = store.write(plan.new, plan.epoch, held.record)
    # From here on the old primary stays read-only: the candidate has every commit, and
    # a failure leaves a cluster that the next `pulumi up` finishes.
    with servers.session(plan.new) as candidate:
        candidate.run(dialect.reset_all)
        fence(store, plan.epoch, f"making {servers.label(plan.new)} writable")
        _apply(candidate, dialect.writable)
    for ordinal in plan.others:
        repoint(servers, dialect, ordinal, source=plan.source, epoch=plan.epoch, store=store,
                demote=ordinal == plan.old)
    if labeller is not None:
        fence(store, plan.epoch, "moving the role labels")
        labeller(plan.new, plan.epoch)
    assert held.record is not None
    return Outcome(held.record, position, killed)


def repoint(servers: Servers, dialect: Dialect, ordinal: int, *, source: Source, epoch: int,
            store: RecordStore, demote: bool) -> None:
    """Make ``ordinal`` replicate from ``source`` with GTID positioning, under ``epoch``.

    ``demote``: it was a primary (its own binlog is ahead of its replica position).
    Shared with the failover arbiter, which repoints survivors and returning servers.
    """
    fence(store, epoch, f"repointing {servers.label(ordinal)}")
    with servers.session(ordinal) as server:
        server.run(dialect.stop)
        if demote:
            _apply(server, dialect.demote)
        server.run(dialect.change_source(source.host, source.port, source.user,
                                         source.password))
        server.run(dialect.start)


def per_domain(flavor: Flavor, gtids: str) -> str:
    """``gtids`` grouped the way a person compares them: MariaDB by replication domain
    (``domain 0: 0-7001-37``), MySQL by source UUID (its sets already are)."""
    groups: dict[str, list[str]] = {}
    for item in (part.strip() for part in gtids.split(",") if part.strip()):
        key = f"domain {item.split('-', 1)[0]}" if flavor == "mariadb" else item.split(":", 1)[0]
        groups.setdefault(key, []).append(item)
    if flavor != "mariadb":
        return ", ".join(item for items in groups.values() for item in items)
    return "; ".join(f"{key}: {', '.join(items)}" for key, items in groups.items())


def primary_behind(flavor: Flavor, primary_label: str, primary_executed: str,
                   held_by: Mapping[str, str]) -> list[str]:
    """Why a read-only recorded primary must not be opened: one line per replica (by
    label) holding GTIDs, executed or only retrieved, that the primary lacks.

    A server restarted in place keeps the role file it started with; a promoted replica's
    is ``replica.cnf`` (``init-rpl-role=SLAVE``), whose crash recovery drops a binlog tail
    its replicas may already hold. Opening it would commit new transactions on top of the
    shorter history, and the replicas' copy of the lost commit could never be applied or
    replicated again: the fork :func:`make_writable`'s caller must refuse first (the
    failover arbiter instead promotes whichever server holds the most).
    """
    lacking = not_contained(flavor, primary_executed, held_by)
    return [f"{label} holds GTIDs the read-only {primary_label} lacks "
            f"({per_domain(flavor, gaps)}): the primary may have lost them in a crash "
            "(restarted in place with its replica role file), or they were written on the "
            "replica itself. Opening the primary would fork history, so it stays read-only; "
            "do not re-clone that replica (it may hold the only copy). Decide which server "
            "holds the history to keep (the failover arbiter, mysql.failover, promotes the "
            "one holding the most)"
            for label, gaps in lacking.items()]


def make_writable(servers: Servers, dialect: Dialect, ordinal: int, epoch: int,
                  store: RecordStore) -> None:
    """The recorded primary found read-only (it restarted): the epoch's holder opens it.

    The caller has made sure no replica holds what it lacks (:func:`primary_behind`;
    the arbiter by its choice, ReplicationInit in its pre-flight)."""
    fence(store, epoch, f"making {servers.label(ordinal)} writable")
    with servers.session(ordinal) as server:
        _apply(server, dialect.writable)
