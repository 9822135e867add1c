"""Switchover: how long writes stop when `pulumi up` moves the primary, and semisync's cost.

The issue's figure: the write unavailability of a planned switchover, from the last commit
the old primary acknowledged to the first the new one acknowledged, with a writer
committing all along; median and max over ``switchovers`` runs, target at most 2 s (MOCO
documents "several seconds"). Beside it the whole switchover as the engine sees it (the
Update call of ReplicationInit, lock and checks included), and semisync's cost on commit
latency measured in the same run (one writer, sequential acknowledgements: async, then
semisync with every replica acknowledging, in interleaved rounds).

Everything is the real path: the provider server that `pulumi up` drives (tests/support/
provider_server.py), three real MariaDB servers started read-only from one template with
bootstrap-users.sh's accounts, the primary record in a ConfigMap of a real kube-apiserver
and the role labels on Pod objects there (tests/support/switchover.py, the harness the
integration tests use). The writer follows the record, as a client of the primary
Service would follow its endpoints; it retries every 5 ms while there is no primary.
"""

from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from bench._procs import BenchUnavailable, need, workdir
from bench._report import Report, Table, Target
from tests.support.controlplane import start_control_plane
from tests.support.provider_server import ProviderServer
from tests.support.switchover import (
    Writer,
    check_history,
    make_template,
    new_driver,
    start_cluster,
)
from tests.support.tools import find_tool

_TARGET_SECONDS = 2.0
_LATENCY_ROUNDS = 3
_CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


@dataclass(frozen=True)
class SwitchoverOptions:
    switchovers: int = 12
    """Switchovers timed, cycling the primary 0 -> 1 -> 2 -> 0 (median and max reported)."""
    commits: int = 300
    """Commits timed for each durability."""
    workdir: Path | None = None

    def __post_init__(self) -> None:
        if self.switchovers < 1 or self.commits < 10:
            raise ValueError(f"need at least 1 switchover and 10 commits, got switchovers="
                             f"{self.switchovers}, commits={self.commits}")


def run(options: SwitchoverOptions) -> Report:
    need("mariadbd", "mariadb-install-db")
    base = workdir("bench-switch-", options.workdir)
    missing = [b for b in _CONTROL_PLANE if find_tool(b) is None]
    if missing:
        raise BenchUnavailable(f"not built: {', '.join(missing)} (scripts/build-tools.sh; the "
                               "record lives in a real kube-apiserver)")
    plane = start_control_plane(base / "kube")
    try:
        template = make_template(base / "template", "10.11")
        with ProviderServer(log_path=base / "provider.log", env={
                "KUBECONFIG": str(plane.write_kubeconfig(base / "kubeconfig"))}) as server, \
                start_cluster(base / "cluster", template, plane) as cluster:
            server.configure()
            driver = new_driver(server)
            driver.up(cluster.inputs(0))
            durations: list[float] = []
            with Writer(cluster) as writer:
                for turn in range(options.switchovers):
                    target = (turn + 1) % 3
                    before = len(writer.commits)
                    started = time.monotonic()
                    driver.up(cluster.inputs(target))
                    durations.append(time.monotonic() - started)
                    writer.wait_commits_on(target, after=before)
            gaps = check_history(writer, cluster)
            primary = options.switchovers % 3
            # Interleaved, so load that comes and goes falls on both sides alike.
            intervals: dict[str, list[float]] = {"async": [], "semisync": []}
            first = len(writer.commits) + 1
            for _ in range(_LATENCY_ROUNDS):
                for durability in ("async", "semisync"):
                    driver.up(cluster.inputs(primary, durability=durability))
                    with Writer(cluster, first_seq=first) as timed:
                        timed.wait_commits_on(primary, after=0,
                                              count=options.commits // _LATENCY_ROUNDS)
                    acks = [c.acked_at for c in timed.commits]
                    intervals[durability] += [b - a for a, b in itertools.pairwise(acks)]
                    first += len(timed.commits) + 1
            latency = {k: statistics.median(v) * 1000 for k, v in intervals.items()}
    finally:
        plane.stop()
    return _report(options, gaps, durations, latency, writer.errors)


def _report(options: SwitchoverOptions, gaps: list[float], durations: list[float],
            latency: dict[str, float], refused: int) -> Report:
    rows = (
        ("write unavailability (last ack old -> first ack new)", statistics.median(gaps),
         max(gaps), min(gaps)),
        ("switchover (ReplicationInit Update)", statistics.median(durations), max(durations),
         min(durations)),
    )
    table = Table(f"{len(gaps)} switchovers under a writer, seconds",
                  ("what", "median s", "max s", "min s"), rows)
    cost = Table(f"commit latency, one writer, sequential acknowledgements, "
                 f"{_LATENCY_ROUNDS} interleaved rounds each", (
        "durability", "median ms", "vs async"), (
        ("async", latency["async"], 1.0),
        ("semisync (one replica acknowledges)", latency["semisync"],
         latency["semisync"] / latency["async"])))
    report = Report("switchover", {
        "switchovers": options.switchovers, "commits": options.commits,
        "servers": "3 real mariadbd 10.11 on 127.0.0.1", "grace_s": 1,
        "record": "ConfigMap in a real kube-apiserver", "writes_refused": refused},
        [table, cost])
    report.targets = [
        Target("write unavailability, median", statistics.median(gaps), _TARGET_SECONDS,
               False, " s"),
        Target("write unavailability, max", max(gaps), _TARGET_SECONDS, False, " s"),
    ]
    return report


__all__ = ["SwitchoverOptions", "run"]
