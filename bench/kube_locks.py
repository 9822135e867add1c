"""Locks on the Kubernetes backend against client-go's leaderelection, on a real API server.

Both run on one control plane started for the run (tests/support/controlplane.py:
etcd 3.5 and kube-apiserver 1.37 built from their modules), one after the other, with
the same number of contenders and the same timing: distlock's lease, renew deadline and
retry period are client-go's 15/10/2 ratios scaled to its ``--ttl``, and the client-go
program (tools/kube/cmd/leaderelection-bench, built from the same Kubernetes modules as
the server) gets exactly those three durations. client-go's ``leaderelection`` with a
``LeaseLock`` is what Kubernetes components use to take turns; it has no queue, so a
free Lease goes to whichever contender's next retry comes first.

A handoff is the time from one holder deciding to release to the next one holding, as
bench/locks.py defines it. A FIFO queue never hands the lock back to the contender that
has just released it (it queues behind everyone waiting); client-go's leaderelection can,
and the table counts how often each did. For distlock it also checks every state the
Lock object went through during the run (the API server's watch) against the queue's
order, so a rate bought by breaking FIFO shows as violations.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from bench._procs import BenchUnavailable, workdir
from bench._report import Report, Table, Target, ratio
from bench.locks import _Contended, _cpu, _CpuMeter, _Hold, _summarize, hold_loop, run_contenders
from tests.support.tools import find_tool

_NAMESPACE = "bench"
_LOCK = "bench-handoff"
_TTL = 3.0  # seconds; lease/renew/retry = 3 / 2 / 0.4 s for both clients
_RUN_TIMEOUT = 600.0


@dataclass(frozen=True)
class KubeLocksOptions:
    contenders: int = 8
    handoffs: int = 200
    workdir: Path | None = None


def _timing() -> tuple[float, float, float]:
    """client-go's 15/10/2 ratios scaled to the TTL, as distlock's kube backend does."""
    return _TTL, _TTL * 10 / 15, _TTL * 2 / 15


def run(options: KubeLocksOptions) -> Report:
    missing = [b for b in ("etcd", "kube-apiserver", "kube-controller-manager",
                           "kube-scheduler", "kwok", "leaderelection-bench")
               if find_tool(b) is None]
    if missing:
        raise BenchUnavailable(f"not built: {', '.join(missing)} (run scripts/build-tools.sh)")
    from components.locks.crd import apply_crd, lock_crd_manifest  # noqa: PLC0415
    from tests.support.controlplane import start_control_plane  # noqa: PLC0415

    base = workdir("bench-kube-", options.workdir)
    plane = start_control_plane(base / "cp")
    try:
        plane.create_namespace(_NAMESPACE)
        apply_crd(plane.admin_client(), lock_crd_manifest(), owner="bench")
        kubeconfig = plane.write_kubeconfig(base / "kubeconfig", namespace=_NAMESPACE)
        server = _CpuMeter([plane.api_server.process.pid, plane.etcd.process.pid])
        before = server.seconds()
        project_run = _distlock_contended(plane.admin_client(), kubeconfig, base, options)
        project_server = server.seconds() - before
        before = server.seconds()
        go_run = _client_go_contended(kubeconfig, options)
        go_server = server.seconds() - before
    finally:
        plane.stop()
        shutil.rmtree(base, ignore_errors=True)
    lease, renew, retry = _timing()
    (project, project_repeats, violations, requests, project_cpu), (go, go_repeats, go_cpu) = \
        project_run, go_run
    rows = tuple((name, r.holds, r.handoffs_per_second, r.mean_ms, r.p50_ms, r.p99_ms,
                  repeats, fifo, "yes" if r.exclusive else "no",
                  1000 * client_cpu / max(r.holds, 1), 1000 * server_cpu / max(r.holds, 1))
                 for name, r, repeats, fifo, client_cpu, server_cpu in (
                     ("distlock kubernetes", project, project_repeats, len(violations),
                      project_cpu, project_server),
                     ("client-go leaderelection (LeaseLock)", go, go_repeats, "no queue",
                      go_cpu, go_server)))
    report = Report("kube-locks", {"contenders": options.contenders,
                                   "handoffs": options.handoffs,
                                   "lease/renew/retry s": f"{lease:g}/{renew:.2f}/{retry:.2f}"})
    report.tables.append(Table(
        "lock handoffs on one real kube-apiserver (same run, same contenders)",
        ("client", "holds", "handoffs/s", "mean ms", "p50 ms", "p99 ms", "back to releaser",
         "FIFO violations", "exclusive", "client CPU ms/grant",
         "API server + etcd CPU ms/grant"),
        rows))
    report.targets.append(Target(
        "handoffs/s vs client-go leaderelection", ratio(project.handoffs_per_second,
                                                        go.handoffs_per_second),
        1.0, True, "x", "client-go's releaser mostly re-takes its own Lease at once (see "
        "'back to releaser'): its rate is one client's release+acquire, not a handoff; "
        "each distlock handoff goes to another process (docs/benchmarks.md)"))
    report.targets.append(Target(
        "FIFO violations in the Lock object's history", float(len(violations)), 0.0, False,
        "", "; ".join(violations[:3])))
    report.notes.append("distlock requests per grant, all contenders: " + ", ".join(
        f"{kind} {count}" for kind, count in requests.items()))
    report.notes.append("CPU per grant: the clients' (distlock: its 8 processes, from the "
                        "start barrier; client-go: the whole program) and the API server's "
                        "plus etcd's (/proc, around each side's run, so the history watch "
                        "of distlock's side is included there)")
    report.notes.append("'FIFO violations' checks every state the Lock object went through "
                        "(the API server's watch, tests/support/kube_lock_history.py): each "
                        "grant to the first waiter, entries joining at the back and leaving "
                        "only when granted; 'back to releaser' counts grants that went "
                        "straight back to the contender that had just released")
    return report


def _repeats(holds: list[tuple[float, object]]) -> int:
    """Grants that went straight back to the holder that had just released."""
    ordered = [holder for _, holder in sorted(holds, key=lambda h: h[0])]
    return sum(1 for a, b in itertools.pairwise(ordered) if a == b)


def _distlock_contended(admin: Any, kubeconfig: Path, base: Path, options: KubeLocksOptions,
                        ) -> tuple[_Contended, int, list[str], dict[str, float], float]:
    """The contenders' run, with the Lock object's whole history watched meanwhile."""
    from kubernetes import client as k8s  # noqa: PLC0415

    from distlock import BackendOptions, open_backend  # noqa: PLC0415
    from distlock.kube import GROUP, PLURAL, VERSION, object_name  # noqa: PLC0415
    from tests.support.kube_lock_history import StateHistory, fifo_violations  # noqa: PLC0415

    with open_backend("kubernetes", BackendOptions(kubeconfig=str(kubeconfig),
                                                   namespace=_NAMESPACE, ttl=_TTL)) as first:
        lock = first.lock(_LOCK)
        lock.acquire()  # creates the object, so its history has a start
        lock.release()
    objects: Any = k8s.CustomObjectsApi(admin)
    start: dict[str, Any] = objects.get_namespaced_custom_object(
        GROUP, VERSION, _NAMESPACE, PLURAL, object_name(_LOCK))
    history = StateHistory(admin, _NAMESPACE, object_name(_LOCK),
                           start["metadata"]["resourceVersion"])
    history.start()
    try:
        records, client_cpu = run_contenders(_contend, (str(kubeconfig),), base,
                                             options.contenders, options.handoffs)
        last = int(start["status"]["fencingToken"]) + len(records)
        deadline = time.monotonic() + 30
        while history.token() < last and time.monotonic() < deadline:
            time.sleep(0.05)  # polling for the watch to deliver the last grant
    finally:
        states = history.stop()
    summary = _summarize([_Hold(acquired, released, 0) for acquired, released, _ in records])
    return (summary, _repeats([(acquired, pid) for acquired, _, pid in records]),
            fifo_violations(dict(start["status"]), states), _requests(base, len(records)),
            client_cpu)


def _requests(base: Path, grants: int) -> dict[str, float]:
    """Requests per grant over every contender, by kind (the contenders wrote them)."""
    total: collections.Counter[str] = collections.Counter()
    for path in base.glob("project-holds-*.requests.json"):
        total.update(json.loads(path.read_text()))
    return {kind: round(count / max(grants, 1), 2) for kind, count in sorted(total.items())}


def _contend(kubeconfig: str, remaining: Synchronized[int], barrier: Barrier,
             out: Path) -> None:
    """One contender process with its own session; records (acquired, released, pid)."""
    from distlock import BackendOptions, open_backend  # noqa: PLC0415
    from distlock.kube import KubeLockBackend  # noqa: PLC0415

    backend = open_backend("kubernetes", BackendOptions(kubeconfig=kubeconfig,
                                                        namespace=_NAMESPACE, ttl=_TTL))
    pid = os.getpid()
    hold_loop(backend, _LOCK, remaining, barrier, out, tag=lambda _token: pid)
    assert isinstance(backend, KubeLockBackend)
    out.with_suffix(".requests.json").write_text(json.dumps(backend.request_counts()))


def _client_go_contended(kubeconfig: Path, options: KubeLocksOptions,
                         ) -> tuple[_Contended, int, float]:
    lease, renew, retry = _timing()
    program = find_tool("leaderelection-bench")
    assert program is not None
    before = _cpu(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        [str(program), f"--kubeconfig={kubeconfig}", f"--namespace={_NAMESPACE}",
         f"--contenders={options.contenders}", f"--handoffs={options.handoffs}",
         f"--lease-duration={lease}s", f"--renew-deadline={renew:.3f}s",
         f"--retry-period={retry:.3f}s"],
        capture_output=True, text=True, timeout=_RUN_TIMEOUT, check=False)
    cpu = _cpu(resource.RUSAGE_CHILDREN) - before
    if result.returncode != 0:
        raise RuntimeError(f"leaderelection-bench failed:\n{result.stderr[-2000:]}")
    holds = json.loads(result.stdout)["holds"]
    summary = _summarize([_Hold(h["acquired"], h["released"], 0) for h in holds])
    return summary, _repeats([(h["acquired"], h["holder"]) for h in holds]), cpu


__all__ = ["KubeLocksOptions", "run"]
