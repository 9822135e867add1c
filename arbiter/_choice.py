"""Which replica may become the primary when the primary is gone, and why the others may not.

The rules (issue 20), each a field of :class:`Observed`, checked in :func:`choose`:

- **most advanced**: its GTIDs, retrieved plus executed, contain every other eligible
  server's. The retrieved part counts: a commit the dead primary acknowledged under
  semi-sync (AFTER_SYNC) is in some replica's relay log, maybe not applied yet, and the
  promotion waits until the candidate applied it. A lagging replica is never promoted
  over one that has more (bitpoke/mysql-operator#865 lost days of data that way).
- **not errant**: no transaction of its own that no one else has. Errant GTIDs are
  judged against the survivors only (the primary is gone): MariaDB keeps one position per
  domain *and* server, so an entry of a former primary's server id below the domain's
  replicated sequence is history, not an errant write (without that rule a replica that
  was once primary, with no other survivor, would look errant: MOCO#419's failure mode);
  MySQL's UUID sets are exact.
- **lag within maxLagSeconds**, both threads' errors clear: a replica whose applier
  stopped on an error has a relay log it cannot apply. MariaDB reports no lag (NULL)
  once its source is gone, so the leader judges by the lag it sampled while the primary
  was healthy (:func:`effective_lag`): a lag that came from a relay-log backlog ends when
  the backlog is applied; one without a backlog (the replica was not receiving) stays.

Pure functions of what the servers reported, so every rule is unit-tested without servers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from components.mysql._replication_sql import (
    ReplicaStatus,
    held_gtids,
    missing_gtids,
    not_contained,
)

_MARIADB_GTID = re.compile(r"^(\d+)-(\d+)-(\d+)$")


@dataclass(frozen=True)
class Observed:
    """One server as the leader saw it during a failover (or why it could not)."""

    ordinal: int
    error: str = ""                 # non-empty: unreachable
    read_only: bool = True
    status: ReplicaStatus | None = None
    executed: str = ""              # every GTID it holds
    retrieved: str = ""             # GTIDs in its relay log (received from its source)
    recorded_primary: bool = False  # the record names it (it restarted read-only)
    # The lag to judge by, when the arbiter knows better than the server's
    # Seconds_Behind_Master (which MariaDB reports as NULL once its source is gone).
    lag_seconds: int | None = None

    @property
    def lag(self) -> int | None:
        if self.lag_seconds is not None:
            return self.lag_seconds
        return self.status.lag_seconds if self.status else None

    @property
    def reachable(self) -> bool:
        return not self.error

    @property
    def has(self) -> str:
        return held_gtids(self.executed, self.retrieved)


@dataclass(frozen=True)
class Choice:
    candidate: Observed | None
    # ordinal -> why it was not chosen (every server but the candidate has one).
    refused: dict[int, str] = field(default_factory=dict)
    errant: dict[int, str] = field(default_factory=dict)

    def reason(self) -> str:
        lines = [f"server {o}: {why}" for o, why in sorted(self.refused.items())]
        if self.candidate is None:
            return "no server qualifies for promotion: " + "; ".join(lines)
        return (f"server {self.candidate.ordinal} is the most advanced eligible server"
                + (f" (others: {'; '.join(lines)})" if lines else ""))


def _entries(text: str) -> list[str]:
    return [item for item in re.sub(r"\s+", "", text).split(",") if item]


def _domain_tops(text: str) -> dict[int, int]:
    tops: dict[int, int] = {}
    for item in _entries(text):
        match = _MARIADB_GTID.match(item)
        if match:
            domain, seq = int(match[1]), int(match[3])
            tops[domain] = max(seq, tops.get(domain, 0))
    return tops


def errant_gtids(flavor: str, server: Observed, others: Sequence[Observed]) -> str:
    """GTIDs ``server`` executed that came neither from its source nor exist elsewhere."""
    # MariaDB's gtid_slave_pos is what it replicated (MySQL's column is gtid_executed,
    # which holds its own writes too).
    replicated = server.status.gtid_position if server.status and flavor == "mariadb" else ""
    base = ",".join(part for part in [server.retrieved, replicated, *(o.has for o in others)]
                    if part)
    missing = missing_gtids(flavor, server.executed, base)  # type: ignore[arg-type]
    if flavor != "mariadb" or not missing:
        return missing
    tops = _domain_tops(base)
    kept = []
    for item in _entries(missing):
        match = _MARIADB_GTID.match(item)
        if match and int(match[3]) > tops.get(int(match[1]), 0):
            kept.append(item)
    return ",".join(kept)


@dataclass(frozen=True)
class LagSample:
    """A replica's lag as sampled while the primary was healthy."""

    seconds: int | None
    backlog: bool   # it had retrieved transactions it had not applied yet


def backlog(flavor: str, server: Observed) -> bool:
    return bool(server.retrieved) and bool(
        missing_gtids(flavor, server.retrieved, server.executed))  # type: ignore[arg-type]


def effective_lag(flavor: str, server: Observed, sample: LagSample | None) -> int | None:
    """The lag to judge ``server`` by during a failover (see the module docstring)."""
    if server.status is None or server.status.lag_seconds is not None:
        return server.status.lag_seconds if server.status else None
    if sample is None or sample.seconds is None:
        return None
    if sample.backlog and not backlog(flavor, server):
        return 0  # what it lagged by was in its relay log, and it has applied it all
    return sample.seconds


def _lag_problem(server: Observed, max_lag: int) -> str:
    status = server.status
    if status is None or not status.configured:
        return "" if server.recorded_primary else "it has no replication source"
    if status.last_sql_errno:
        return f"its SQL thread stopped on error {status.last_sql_errno}: {status.last_sql_error}"
    if not status.sql_running:
        return "its SQL thread is stopped"
    if server.lag is not None and server.lag > max_lag:
        return f"lag {server.lag}s is beyond maxLagSeconds={max_lag}"
    return ""


def _refusals(flavor: str, observed: Sequence[Observed], max_lag: int,
              excluded: Mapping[int, str]) -> tuple[dict[int, str], dict[int, str]]:
    """Every server that cannot be chosen whatever the others hold, and the errant ones."""
    refused: dict[int, str] = {}
    errant: dict[int, str] = {}
    reachable = [s for s in observed if s.reachable]
    for server in observed:
        if not server.reachable:
            refused[server.ordinal] = f"unreachable ({server.error})"
        elif server.ordinal in excluded:
            refused[server.ordinal] = f"kept out: {excluded[server.ordinal]}"
    for server in reachable:
        if server.ordinal in refused or server.recorded_primary:
            continue
        found = errant_gtids(flavor, server, [s for s in reachable if s is not server])
        if found:
            errant[server.ordinal] = found
            refused[server.ordinal] = f"errant GTIDs {found}"
    for server in reachable:
        problem = "" if server.ordinal in refused else _lag_problem(server, max_lag)
        if problem:
            refused[server.ordinal] = problem
    return refused, errant


def choose(flavor: str, observed: Sequence[Observed], *, max_lag: int,
           excluded: Mapping[int, str] | None = None) -> Choice:
    """The server to promote, or none, with a reason for every server not chosen.

    ``excluded``: servers kept out before (errant on return); they are never chosen.
    """
    excluded = excluded or {}
    refused, errant = _refusals(flavor, observed, max_lag, excluded)
    # Containment is judged against every non-errant survivor, lagging ones included:
    # a lagging replica may still hold a commit no one else received.
    others = [s for s in observed if s.reachable and s.ordinal not in errant
              and s.ordinal not in excluded]
    qualified: list[Observed] = []
    for server in others:
        if server.ordinal in refused:
            continue
        gaps = not_contained(flavor, server.has,  # type: ignore[arg-type]
                             {o.ordinal: o.has for o in others if o is not server})
        lacks = [f"server {o}'s {gap}" for o, gap in gaps.items()]
        if lacks:
            refused[server.ordinal] = f"lacks {', '.join(lacks)}"
        else:
            qualified.append(server)
    if not qualified:
        return Choice(None, refused, errant)
    best = min(qualified, key=lambda s: (not s.recorded_primary,
                                         s.lag or 0,
                                         s.ordinal))
    for server in qualified:
        if server is not best:
            refused[server.ordinal] = f"as advanced, but server {best.ordinal} was preferred"
    return Choice(best, refused, errant)
