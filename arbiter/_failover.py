"""The arbiter's leader: detect a failed primary, choose, promote, fence, rejoin.

Why these steps, in this order (issue 20):

1. **Detection** counts consecutive failed checks of the recorded primary, one per
   ``periodSeconds``: a connect and a write-free query (``@@read_only``) with timeouts
   of one period. A read-only primary fails the check too (it cannot take writes; a
   restarted one comes back read-only). Readiness alone is not used: a pod can be Ready
   while its server refuses connections. ``checks`` failures in a row are needed, so a
   shorter blip never starts a failover.
2. The leader then takes the cluster's replication lock, the lock ``pulumi up`` holds
   for a switchover: the two never act at once, and the lock's fencing token (strictly
   increasing) is the new epoch (with the Kubernetes backend, whose tokens count from 1,
   the record's epoch plus the token: :func:`failover_epoch`). It re-reads the record
   and re-checks the primary under the lock: a switchover that made it read-only has
   finished by then and moved the record, and nothing happens.
3. **Choice** (:mod:`arbiter._choice`); none qualifies: no promotion, the reason goes
   to the status ConfigMap and an Event, and the leader tries again next period.
4. **Promotion**: the record names the candidate under the new epoch first (the old
   primary's agent sees it, or cannot confirm its own claim, and makes its server
   read-only); the candidate applies what it retrieved; its replication is cleared;
   the leader waits until ``ttlSeconds`` have passed since the record moved, unless it
   made the old primary read-only itself; only then is the candidate writable. The
   others are repointed and the labels move. Each step is fenced by the record (the
   engine's :func:`~components.mysql._record.fence`) and by both locks: a leader that
   lost its lease stops at its next step, and the next leader redoes the failover
   under a newer epoch (a candidate left read-only under the record fails the check).
5. **Rejoin**: while the primary is healthy, a reachable server that is not replicating
   from it is made read-only, then repointed, unless it holds errant transactions: then
   it is kept out and reported with the GTIDs; nothing is wiped automatically.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import distlock
from arbiter._choice import (
    Choice,
    LagSample,
    Observed,
    backlog,
    choose,
    effective_lag,
)
from arbiter._config import Config
from arbiter._kube import Kube, Status
from arbiter._servers import ServerError, Servers
from components.mysql._record import (
    KubernetesPodLabels,
    PrimaryRecord,
    RecordError,
    RecordStore,
    StaleLockToken,
    fence,
    lock_epoch,
)
from components.mysql._replication_sql import RETRIEVED_COLUMN, Statement, missing_gtids
from components.mysql._switchover import Source, make_writable, repoint

_log = logging.getLogger("arbiter")
_EVENT_EVERY_TIME = frozenset({"promoted", "excluded", "rejoined", "fenced"})


class FailoverStopped(RuntimeError):
    """This leader must stop acting (lost a lock, overtaken, or a step failed)."""


def failover_epoch(backend: str, token: int, recorded: int) -> int:
    """The epoch a failover under the lock grant ``token`` writes over a record at epoch
    ``recorded``: :func:`~components.mysql._record.lock_epoch`, the numbering `pulumi up`
    uses too; a token that cannot be newer stops this leader."""
    try:
        return lock_epoch(backend, token, recorded)
    except StaleLockToken as error:
        raise FailoverStopped(f"{error}; not acting") from None


@dataclass
class Check:
    ok: bool
    reason: str


@dataclass
class _State:
    failures: int = 0
    last_report: str = ""
    excluded: dict[int, str] = field(default_factory=dict)
    lags: dict[int, LagSample] = field(default_factory=dict)


class Arbiter:
    def __init__(self, config: Config, store: RecordStore, kube: Kube | None) -> None:
        self.config = config
        self.store = store
        self.kube = kube
        self.dialect = config.dialect
        period = config.failover.period_seconds
        self.servers = Servers(config, timeout=period)
        # A check is failed when it takes longer than a period (that is what failed
        # means); reading a server's replication state only has to finish, on a node
        # that may be loaded: a timeout there would hide a survivor from the choice.
        self._observe_timeout = max(period, 2.0)
        self.state = _State()

    # --- the loop -------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Campaign for leadership, then act each period while leader, until ``stop``."""
        cfg = self.config
        options = distlock.BackendOptions(endpoints=cfg.lock_endpoints,
                                          ttl=cfg.failover.ttl_seconds,
                                          namespace=cfg.lock_namespace,
                                          kubeconfig=cfg.kubeconfig, identity="arbiter")
        # The first read builds the API client (seconds on a loaded node): done before
        # campaigning, so a new leader's first check is not late by that much.
        with contextlib.suppress(RecordError):
            self.store.read()
        with distlock.open_backend(cfg.lock_backend, options) as session:
            leader = session.lock(cfg.leader_lock_name)
            while not stop.is_set():
                try:
                    leader.acquire(timeout=None, cancel=stop)
                except distlock.LockTimeout:
                    return  # cancelled by stop
                _log.info("leader (token %d)", leader.token)
                try:
                    self._lead(session, leader, stop)
                finally:
                    with contextlib.suppress(distlock.DistlockError):
                        leader.release()

    def _lead(self, session: distlock.LockBackend, leader: distlock.Lock,
              stop: threading.Event) -> None:
        period = self.config.failover.period_seconds
        while not stop.is_set() and leader.held:
            started = time.monotonic()
            try:
                self.tick(session, leader)
            except (FailoverStopped, RecordError, distlock.DistlockError) as error:
                self._report("stopped", str(error), warning=True)
            stop.wait(max(0.0, period - (time.monotonic() - started)))

    def tick(self, session: distlock.LockBackend, leader: distlock.Lock) -> None:
        record = self.store.read()
        if record is None:
            self._report("waiting", f"{self.store.describe()} does not exist yet: `pulumi up` "
                         "writes it")
            return
        # A fenced record (a switchover moving the primary) names no writable server: a
        # failed check too; under the lock, one still fenced is a switchover that died.
        check = Check(False, "the record is fenced (no primary)") if record.fenced \
            else self.check(record.authority)
        cfg = self.config.failover
        if check.ok:
            if self.state.failures:
                self._report("watching", f"{self.servers.label(record.authority)} is healthy "
                             f"again after {self.state.failures} failed check(s), fewer than "
                             f"checks={cfg.checks}: no failover", record=record)
            self.state.failures = 0
            self._rejoin(session, leader, record)
            return
        self.state.failures += 1
        if self.state.failures < cfg.checks:
            _log.info("check %d/%d of %s failed: %s", self.state.failures, cfg.checks,
                      self.servers.label(record.authority), check.reason)
            return
        self.failover(session, leader, record, check.reason)

    # --- detection --------------------------------------------------------------------
    def check(self, ordinal: int) -> Check:
        """Connect and run a write-free query, bounded by one period."""
        try:
            with self.servers.quick(ordinal) as server:
                row = server.one(self.dialect.read_only_state)
        except ServerError as error:
            return Check(False, str(error))
        if self.dialect.is_read_only(row):
            return Check(False, f"{self.servers.label(ordinal)} is read-only")
        return Check(True, "")

    # --- observation ------------------------------------------------------------------
    def observe(self, ordinal: int, record: PrimaryRecord) -> Observed:
        dialect = self.dialect
        try:
            with self.servers.quick(ordinal, timeout=self._observe_timeout) as server:
                row = server.one(dialect.status)
                variables = server.one(dialect.replica_variables) or {}
                read_only = dialect.is_read_only(server.one(dialect.read_only_state))
                executed = dialect.executed_set(server.one(dialect.executed))
        except ServerError as error:
            return Observed(ordinal, error=str(error), recorded_primary=ordinal == record.authority)
        status = dialect.parse_status(row, variables) if row else None
        retrieved = str((row or {}).get(RETRIEVED_COLUMN[dialect.flavor]) or "")
        return Observed(ordinal, read_only=read_only, status=status, executed=executed,
                        retrieved=retrieved.replace("\n", ""),
                        recorded_primary=ordinal == record.authority)

    def observe_all(self, record: PrimaryRecord) -> list[Observed]:
        """Every server at once: a failover waits for the slowest, not for the sum."""
        count = len(self.config.servers)
        with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
            return list(pool.map(lambda o: self.observe(o, record), range(count)))

    # --- failover ---------------------------------------------------------------------
    def _each_replica(self, record: PrimaryRecord, statement: Statement,
                      ordinals: list[int] | None = None) -> dict[int, str]:
        """Run ``statement`` on every replica at once; the errors by ordinal."""
        targets = [o for o in (ordinals if ordinals is not None
                               else range(len(self.config.servers))) if o != record.authority]
        # STOP ... IO_THREAD waits for a thread blocked on a frozen source: allow the TTL,
        # which the failover waits anyway.
        timeout = self.config.failover.ttl_seconds

        def run(ordinal: int) -> str:
            try:
                with self.servers.session(ordinal, read_timeout=max(1, int(timeout))) as server:
                    server.run(statement)
            except ServerError as error:
                return str(error)
            return ""

        fence(self.store, record.epoch, f"running {statement.display()} on the replicas")
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
            errors = dict(zip(targets, pool.map(run, targets), strict=True))
        return {o: e for o, e in errors.items() if e}

    def _stop_receiving(self, record: PrimaryRecord) -> dict[int, str]:
        return self._each_replica(record, Statement(f"{self.dialect.stop.sql} IO_THREAD"))

    def _resume_receiving(self, record: PrimaryRecord, observed: list[Observed]) -> None:
        self._each_replica(record, Statement(f"{self.dialect.start.sql} IO_THREAD"),
                           [s.ordinal for s in observed if s.reachable])

    @contextlib.contextmanager
    def _action_lock(self, session: distlock.LockBackend, leader: distlock.Lock,
                     timeout: float | None) -> Iterator[distlock.Lock]:
        lock = session.lock(self.config.lock_name)
        lock.acquire(timeout=timeout)
        try:
            yield lock
        finally:
            with contextlib.suppress(distlock.DistlockError):
                lock.release()

    def failover(self, session: distlock.LockBackend, leader: distlock.Lock,
                 seen: PrimaryRecord, reason: str) -> None:
        asked = time.monotonic()
        with self._action_lock(session, leader, timeout=None) as lock:
            _log.info("holding %s after %.3fs (token %d)", self.config.lock_name,
                      time.monotonic() - asked, lock.token)
            record = self.store.read()
            if record is None or record.version != seen.version:
                # Someone (a switchover, another leader) moved the record meanwhile.
                self.state.failures = 0
                return
            check = Check(False, "fenced") if record.fenced else self.check(record.authority)
            if check.ok:
                self.state.failures = 0
                return
            epoch = failover_epoch(self.config.lock_backend, lock.token, record.epoch)
            # Frozen GTID sets: the choice cannot go stale, and an old primary that is
            # only cut off from us loses its semi-sync acknowledgements from here on.
            unfrozen = self._stop_receiving(record)
            # A replica that may still be receiving cannot be judged: treated as absent.
            flavor = self.dialect.flavor
            observed = [Observed(s.ordinal, error=f"could not stop receiving: "
                                 f"{unfrozen[s.ordinal]}") if s.ordinal in unfrozen else
                        dataclasses.replace(s, lag_seconds=effective_lag(
                            flavor, s, self.state.lags.get(s.ordinal)))
                        for s in self.observe_all(record)]
            _log.info("observed under epoch %d: %s", epoch, "; ".join(
                f"server {s.ordinal}: " + (s.error or f"lag {s.lag} (sample "
                                           f"{self.state.lags.get(s.ordinal)}), executed "
                                           f"{s.executed}, retrieved {s.retrieved}")
                for s in observed))
            choice = choose(self.dialect.flavor, observed,
                            max_lag=self.config.failover.max_lag_seconds,
                            excluded=self.state.excluded)
            self.state.excluded.update({o: f"errant GTIDs {g}" for o, g in choice.errant.items()})
            if choice.candidate is None:
                self._resume_receiving(record, observed)
                self._report("blocked", f"primary {self.servers.label(record.authority)} "
                             f"failed ({reason}); {choice.reason()}", warning=True,
                             record=record)
                return
            self._report("promoting", f"primary {self.servers.label(record.authority)} failed "
                         f"{self.config.failover.checks} checks ({reason}); promoting "
                         f"under epoch {epoch}: {choice.reason()}", record=record, epoch=epoch)
            self._promote(leader, lock, record, choice, observed=observed, epoch=epoch)
        self.state.failures = 0

    def _guard(self, leader: distlock.Lock, lock: distlock.Lock, epoch: int,
               before: str) -> None:
        try:
            leader.check()
            lock.check()
        except distlock.DistlockError as error:
            raise FailoverStopped(f"stopped before {before}: {error}") from None
        fence(self.store, epoch, before)

    def _promote(self, leader: distlock.Lock, lock: distlock.Lock, record: PrimaryRecord,
                 choice: Choice, *, observed: list[Observed], epoch: int) -> None:
        cfg, dialect, servers = self.config, self.dialect, self.servers
        assert choice.candidate is not None
        new, old = choice.candidate.ordinal, record.authority
        leader.check()
        # 1. The record names the candidate: from here the old primary's agent demotes.
        self.store.write(new, epoch, record)
        moved_at = time.monotonic()
        fenced = new == old or self._fence_old(old, epoch)
        # 2. The candidate applies everything it retrieved (the acknowledged commits).
        self._guard(leader, lock, epoch, f"waiting for {servers.label(new)} to apply its relay log")
        self._wait_applied(choice.candidate)
        # 3. Its replication is cleared and its source side set up for the durability.
        self._guard(leader, lock, epoch, f"promoting {servers.label(new)}")
        with servers.session(new, read_timeout=30) as candidate:
            candidate.run(dialect.stop)
            candidate.run(dialect.reset_all)
            if cfg.durability == "semisync":
                for statement in dialect.semisync_source(True, cfg.semisync_timeout_seconds,
                                                         cfg.semisync_wait_count):
                    candidate.run(statement)
        # 4. An old primary that may still be alive has demoted itself within the TTL:
        # its agent demotes after ttl - 2 periods without a confirmation, and every
        # confirmation it made started before the record moved.
        if not fenced:
            remaining = moved_at + cfg.failover.ttl_seconds - time.monotonic()
            if remaining > 0:
                # Not a stand-in for a condition: the old primary's lease running out is
                # the condition, and nothing observable tells it sooner.
                time.sleep(remaining)
        self._guard(leader, lock, epoch, f"making {servers.label(new)} writable")
        make_writable(servers, dialect, new, epoch, self.store)
        self._report("promoted", f"{servers.label(new)} is the primary under epoch {epoch} "
                     f"(was {servers.label(old)})", epoch=epoch, primary=new)
        # 5. The survivors follow it; the others rejoin when they return.
        source = self._source(new)
        for server in observed:
            if server.ordinal == new or not server.reachable \
                    or server.ordinal in self.state.excluded:
                continue
            leader.check()
            try:
                repoint(servers, dialect, server.ordinal, source=source, epoch=epoch,
                        store=self.store, demote=server.ordinal == old)
            except ServerError as error:
                _log.warning("repointing after the failover: %s", error)
        if cfg.pods:
            self._guard(leader, lock, epoch, "moving the role labels")
            KubernetesPodLabels(cfg.record_namespace, cfg.pods,
                                kubeconfig=cfg.kubeconfig).move(new, epoch)

    def _fence_old(self, old: int, epoch: int) -> bool:
        """Best effort: make the old primary read-only ourselves; True if it is now."""
        try:
            with self.servers.quick(old) as server:
                for statement in self.dialect.read_only_on:
                    server.run(statement)
                return self.dialect.is_read_only(server.one(self.dialect.read_only_state))
        except ServerError:
            return False

    def _wait_applied(self, candidate: Observed) -> None:
        """Until the candidate applied its whole relay log (read again: it is final now)."""
        column = RETRIEVED_COLUMN[self.dialect.flavor]
        deadline = time.monotonic() + self.config.failover.apply_timeout_seconds
        with self.servers.session(candidate.ordinal, read_timeout=30) as server:
            position = str((server.one(self.dialect.status) or {}).get(column) or "")
            position = position.replace("\n", "")
            while position:
                row = server.one(self.dialect.wait_for(position, 1)) or {}
                if self.dialect.wait_reached(row.get("result")):
                    return
                if time.monotonic() >= deadline:
                    raise FailoverStopped(
                        f"{self.servers.label(candidate.ordinal)} did not apply its relay "
                        f"log up to {position} within "
                        f"{self.config.failover.apply_timeout_seconds:g}s; it stays read-only "
                        "under the record and the next period chooses again")

    def _source(self, ordinal: int) -> Source:
        address = self.config.sources[ordinal]
        return Source(address.host, address.port, self.config.replication_user,
                      self.config.replication_password)

    # --- rejoin -----------------------------------------------------------------------
    def _rejoin(self, session: distlock.LockBackend, leader: distlock.Lock,
                record: PrimaryRecord) -> None:
        source = self.config.sources[record.authority]
        strays = []
        for seen in self.observe_all(record):
            ordinal = seen.ordinal
            if ordinal == record.authority:
                continue
            # NULL lag means a thread is not running (the primary may have died since
            # the check): the last real figure stays the one to judge by.
            if seen.status is not None and seen.status.lag_seconds is not None:
                self.state.lags[ordinal] = LagSample(seen.status.lag_seconds,
                                                     backlog(self.dialect.flavor, seen))
            status = seen.status
            following = (status is not None and status.source_host == source.host
                         and status.source_port == source.port)
            if seen.reachable and (not following or not seen.read_only):
                strays.append(seen)
            elif following and ordinal in self.state.excluded:
                # Repaired by hand (or by `pulumi up`): no longer ours to keep out.
                del self.state.excluded[ordinal]
        if not strays:
            return
        try:
            with self.servers.quick(record.authority) as primary:
                primary_executed = self.dialect.executed_set(primary.one(self.dialect.executed))
        except ServerError:
            return
        try:
            with self._action_lock(session, leader, timeout=self.config.failover.period_seconds):
                for seen in strays:
                    self._rejoin_one(seen, record, primary_executed)
        except distlock.LockTimeout:
            return  # `pulumi up` holds the lock: it converges the replicas itself

    def _rejoin_one(self, seen: Observed, record: PrimaryRecord, primary_executed: str) -> None:
        label = self.servers.label(seen.ordinal)
        if not seen.read_only:
            # Two writable servers: the one the record does not name stops first.
            self._fence_old(seen.ordinal, record.epoch)
            self._report("fenced", f"{label} was writable but the record names "
                         f"{self.servers.label(record.authority)}: made read-only", warning=True)
        errant = missing_gtids(self.dialect.flavor, seen.executed, primary_executed)
        if errant:
            why = (f"errant GTIDs {errant} (transactions the primary "
                   f"{self.servers.label(record.authority)} never had); kept out, read-only "
                   "and not replicating: inspect them, then rebuild or repair it by hand")
            if self.state.excluded.get(seen.ordinal) != why:
                self.state.excluded[seen.ordinal] = why
                self._report("excluded", f"{label}: {why}", warning=True)
            return
        source = self.config.sources[record.authority]
        if seen.status is not None and seen.status.source_host == source.host \
                and seen.status.source_port == source.port:
            return  # it follows the primary already; it only had to stop being writable
        repoint(self.servers, self.dialect, seen.ordinal, source=self._source(record.authority),
                epoch=record.epoch, store=self.store, demote=True)
        self.state.excluded.pop(seen.ordinal, None)
        self._report("rejoined", f"{label} replicates from "
                     f"{self.servers.label(record.authority)} again", epoch=record.epoch,
                     primary=record.authority)

    # --- reporting --------------------------------------------------------------------
    def _report(self, state: str, reason: str, *, warning: bool = False,
                record: PrimaryRecord | None = None, epoch: int | None = None,
                primary: int | None = None) -> None:
        if record is None:
            with contextlib.suppress(RecordError):
                record = self.store.read()
        status = Status(state, reason,
                        primary if primary is not None else (record.authority if record else -1),
                        epoch if epoch is not None else (record.epoch if record else 0),
                        dict(self.state.excluded))
        # One Event per change of state: a blocked failover retried every period (its
        # reason names lags that change every time) must not flood the namespace; each
        # server kept out, rejoined or fenced is an event of its own.
        event = state != self.state.last_report or state in _EVENT_EVERY_TIME
        self.state.last_report = state
        if self.kube is not None:
            self.kube.report(status, event=event, warning=warning)
        else:
            (_log.warning if warning else _log.info)("%s: %s", state, reason)
