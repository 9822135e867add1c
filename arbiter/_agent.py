"""The fencing agent beside each server: a primary runs only while it can confirm its claim.

Why an agent in the pod and not the arbiter alone: the arbiter cannot reach a primary
that is cut off from it, and that primary may still be taking writes from clients on
its side of the partition. Only something next to the server can stop it. The rule is
Patroni's: every ``period`` the agent reads the primary record; while the record names
its server, the read is a confirmation. It makes its server read-only, and ends the
client sessions so that a commit waiting for a semi-sync acknowledgement is never
acknowledged, when

- the record names another server (the arbiter moved it), or
- it has not confirmed for ``ttl - 2 * period`` seconds (it cannot reach the API, or its
  process was paused: the check runs first after every wake-up, before any read).

The arbiter opens a new primary only ``ttl`` after it moved the record, so by then an
old primary that is alive has demoted itself, with two periods to spare for the
demotion (its connect and each statement are bounded by one period). The agent never makes a server
writable: only the arbiter or `pulumi up`, holding the current epoch, does.

The record read runs in a worker thread with a deadline of one period: a hung API call
must not stretch the agent's own deadline.

Why a GET of the record every period, and neither a watch nor the record's volume: what
keeps a primary writable is a *confirmation*, a read that shows the record naming it
now. A GET without a resourceVersion is a consistent read (a quorum read from the API
server's etcd), so each one proves the record is still ours at that moment, and an API
server the agent cannot reach ends in a demotion within the deadline. A watch only
tells of changes: its silence looks the same whether nothing changed or the stream
stalled (a half-open connection, a partition, a restarted API server), so it could
never replace the periodic proof, only add faster news of a move, and that buys
nothing: the arbiter opens the new primary only ``ttl`` after moving the record
whatever the old one saw (a switchover demotes the old primary itself first). The
ConfigMap volume the kubelet refreshes is worse: it shows the record as the kubelet's
sync period and cache last left it, up to a minute or more late, so it would confirm a
claim long gone. The cost is one small GET per pod per period.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time

from arbiter._config import Config
from arbiter._servers import ServerError, Session, connect
from components.mysql._record import PrimaryRecord, RecordError, RecordStore

_log = logging.getLogger("arbiter.agent")


class Agent:
    def __init__(self, config: Config, store: RecordStore, ordinal: int) -> None:
        if not 0 <= ordinal < len(config.servers):
            raise ValueError(f"agent ordinal {ordinal}: the cluster has servers "
                             f"0..{len(config.servers) - 1}")
        self.config = config
        self.store = store
        self.ordinal = ordinal
        self.dialect = config.dialect
        self.confirmed_at: float | None = None  # monotonic start of the last confirming read
        # Set when the server must be read-only; cleared only by a new confirmation, so a
        # demotion that failed (the server was frozen too) is retried every period.
        self.fenced = False
        self._last_failure = ""
        self.demotions = 0
        self._reader = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    @property
    def label(self) -> str:
        return self.config.label(self.ordinal)

    def run(self, stop: threading.Event) -> None:
        period = self.config.failover.period_seconds
        try:
            while not stop.is_set():
                started = time.monotonic()
                self.tick()
                stop.wait(max(0.0, period - (time.monotonic() - started)))
        finally:
            self._reader.shutdown(wait=False, cancel_futures=True)

    def tick(self) -> None:
        ttl, period = self.config.failover.ttl_seconds, self.config.failover.period_seconds
        # First, before anything that could block: a paused process wakes up here.
        deadline = ttl - 2 * period
        if self.confirmed_at is not None and time.monotonic() - self.confirmed_at >= deadline:
            self.fenced = True
            self.confirmed_at = None
        if self.fenced:
            self.demote(f"no confirmation of the record within {deadline:g}s")
        started = time.monotonic()
        record = self._read(timeout=period)
        if record is None:
            return
        if record.primary == self.ordinal:
            self.confirmed_at = started
            self.fenced = False
        else:
            self.confirmed_at = None
            self.fenced = True
            self.demote(f"the record names {record.describe()} (epoch {record.epoch})")

    def _read(self, timeout: float) -> PrimaryRecord | None:
        future = self._reader.submit(self.store.read)
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            _log.warning("%s: reading %s took longer than %gs", self.label,
                         self.store.describe(), timeout)
            # That read may never return: the next one gets a thread of its own.
            self._reader.shutdown(wait=False, cancel_futures=True)
            self._reader = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        except RecordError as error:
            _log.warning("%s: %s", self.label, error)
        return None

    def demote(self, why: str) -> None:
        """Read-only, and no client session left that could still be acknowledged."""
        cfg, dialect = self.config, self.dialect
        try:
            with connect(self.label, cfg.servers[self.ordinal], cfg.topology_user,
                         cfg.topology_password, timeout=cfg.failover.period_seconds) as server:
                if dialect.is_read_only(server.one(dialect.read_only_state)):
                    return
                # Sessions first: a commit waiting for a semi-sync acknowledgement holds
                # up SET read_only, and it must end unacknowledged.
                self._end_sessions(server)
                for statement in dialect.read_only_on:
                    server.run(statement)
                self._end_sessions(server)
        except ServerError as error:
            # Once per distinct failure: a dead server is retried every period.
            if str(error) != self._last_failure:
                _log.warning("%s: cannot demote (%s): %s", self.label, why, error)
            self._last_failure = str(error)
            return
        self._last_failure = ""
        self.demotions += 1
        _log.warning("%s: made read-only: %s", self.label, why)

    def _end_sessions(self, server: Session) -> None:
        for row in server.run(self.dialect.sessions_of_others(self.config.topology_user)):
            try:
                server.run(self.dialect.kill(int(row["id"])))
            except ServerError:
                continue  # it ended by itself meanwhile
