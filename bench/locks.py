"""Locks on the etcd backend: the project's lock against raw transactions and etcdctl lock.

A lock handoff on etcd needs about two raft round trips (the holder's delete commits;
the next waiter, woken by its watch, confirms with a linearizable read that it now has
the lowest create revision), so the rate of single compare-and-swap transactions,
measured against the same 3-member cluster in the same run, is the yardstick: half of
it is the best a handoff can do, and one transaction's latency is the unit a
handoff's latency is judged in.
``etcdctl lock`` (etcd's own Go ``concurrency.Mutex``) is the usual alternative; since
it pays a process and a lease per hold, the Mutex itself is measured in-process too
(``etcd-mutex-bench``, tools/kube/cmd/etcd-mutex-bench: 8 sessions in one Go process),
and it is the yardstick distlock's targets are set against.

CPU: on 2 shared cores a handoff's time is mostly CPU, so each contended run also
reports CPU seconds per 1,000 handoffs for its client processes (their own rusage) and
for the three etcd members (/proc of their PIDs, sampled around the run): a slower or
busier machine moves the rates, but a regression shows as more CPU per handoff.

Contenders are separate processes, as lock clients in pods would be, each with its own
session (its own lease), all started before the clock starts. A holder records the
wall-clock times it got and gave up the lock and its fencing token; the time from one
holder giving up to the next holding is the handoff latency (release RPC, watch
notification and the waiter's check, i.e. the time the lock is idle between holders).
Grants are FIFO when tokens (the waiters' create revisions, their queue positions)
strictly increase in grant order; they are exclusive when no grant starts before the
previous holder finished.

All clients talk to the leader's member, so no run is charged the extra follower hop
that another run avoided.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.client
import itertools
import json
import multiprocessing
import os
import queue
import resource
import shutil
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc

from bench._procs import need, workdir
from bench._report import Report, Table, Target, percentile, ratio
from tests.support.etcd import EtcdCluster
from tests.support.procs import LOCALHOST
from tests.support.tools import BUILD_COMMAND, bin_dir, find_tool

_LOCK_NAME = "bench/handoff"
_TTL = 10.0
_RUN_TIMEOUT = 600.0
# The Go Mutex and distlock each run this many times, alternating (see _measure).
_ROUNDS = 2


@dataclass(frozen=True)
class LocksOptions:
    contenders: int = 8
    """Processes fighting for one lock."""
    handoffs: int = 400
    """Acquisitions measured per contended run (and uncontended acquire+release cycles)."""
    workdir: Path | None = None

    def __post_init__(self) -> None:
        if self.contenders < 2:
            raise ValueError(f"a contended run needs at least 2 contenders, got "
                             f"{self.contenders}")
        if self.handoffs < 10:
            raise ValueError(f"need at least 10 handoffs to say anything, got {self.handoffs}")


@dataclass(frozen=True)
class _Hold:
    acquired: float
    released: float
    token: int


@dataclass(frozen=True)
class _Contended:
    holds: int
    handoffs_per_second: float
    mean_ms: float
    p50_ms: float
    p99_ms: float
    fifo: bool
    exclusive: bool
    client_cpu_per_1000: float | None = None
    """CPU seconds of the client processes per 1,000 handoffs."""
    etcd_cpu_per_1000: float | None = None
    """CPU seconds of the etcd members per 1,000 handoffs."""


@dataclass(frozen=True)
class _Txns:
    per_second: float
    p50_ms: float
    p99_ms: float


class _NotLanded(Exception):
    """The project's etcd lock backend is not in the tree yet (or cannot open)."""


def run(options: LocksOptions) -> Report:
    need("etcd", "etcdctl")
    base = workdir("bench-locks-", options.workdir)
    cluster = EtcdCluster(base / "etcd", size=3, token="bench-locks")
    try:
        cluster.start()
        endpoint = cluster.leader().client_url
        return _measure(endpoint, base, options, [m.process.pid for m in cluster.members])
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def _measure(endpoint: str, base: Path, options: LocksOptions,
             etcd_pids: Sequence[int]) -> Report:
    cycles = options.handoffs
    catch_up_ms = _catch_up_delay(endpoint, 20 if cycles >= 100 else 5)
    etcdctl_rate = _etcdctl_uncontended(endpoint, max(10, cycles // 10))
    etcd_cpu = _CpuMeter(etcd_pids)
    etcdctl = etcd_cpu.charge([lambda _started: _with_children_cpu(
        lambda: _etcdctl_contended(endpoint, base, options))])
    go_skipped = skipped = ""
    try:
        _go_mutex_bench()
    except _NotLanded as reason:
        go_skipped = str(reason)
    # The Go Mutex and distlock alternate, in rounds, so that a change in the machine's
    # load (other jobs come and go within seconds here) falls on both alike.
    go_rates: list[float] = []
    project_rates: list[float] = []
    per_round = max(10, cycles // _ROUNDS)
    for _ in range(_ROUNDS):
        if not go_skipped:
            go_rates.append(_go_uncontended(endpoint, per_round))
        if not skipped:
            try:
                project_rates.append(_project_uncontended(endpoint, per_round))
            except _NotLanded as reason:
                skipped = str(reason)
    go_rate = statistics.median(go_rates) if go_rates else None
    project_rate = statistics.median(project_rates) if project_rates and not skipped else None
    go_runs: list[_Run] = []
    project_runs: list[_Run] = []
    for _ in range(_ROUNDS):
        if not go_skipped:
            go_runs.append(lambda _started: _go_contended(endpoint, options, per_round))
        if not skipped:
            project_runs.append(lambda started: _project_contended(endpoint, base, options,
                                                                   per_round, started))
    # The raw operations are measured before each round of contended runs, outside the
    # CPU they are charged, so the floor sees the same machine the lock does.
    raws: list[_RawOps] = []
    go, project = etcd_cpu.charge_alternately(
        go_runs, project_runs, before_round=lambda: raws.append(_raw_ops(endpoint, cycles)))
    gateway_txns = _median_txns([raw.gateway_txns for raw in raws])
    grpc_txns = _median_txns([raw.grpc_txns for raw in raws])
    # Each raw operation over both of etcd's client APIs, the faster one kept: the floor
    # is what the operations cost with the leanest client measured, whichever it is.
    txns = max(gateway_txns, grpc_txns, key=lambda t: t.per_second)
    reads = {api: statistics.median(raw.reads[api] for raw in raws) for api in _APIS}
    notifies = {api: statistics.median(raw.notifies[api] for raw in raws) for api in _APIS}
    read_ms, notify_ms = min(reads.values()), min(notifies.values())

    limit = txns.per_second / 2
    uncontended = Table(
        "uncontended: one client, acquire + release in a loop",
        ("client", "cycles/s", "vs txn rate / 2", "note"),
        (("raw CAS txn, JSON gateway (http.client)", gateway_txns.per_second, None,
          f"p50 {gateway_txns.p50_ms:.2f} ms, p99 {gateway_txns.p99_ms:.2f} ms" +
          ("; the unit (1 commit)" if txns is gateway_txns else "")),
         ("raw CAS txn, gRPC (grpcio)", grpc_txns.per_second, None,
          f"p50 {grpc_txns.p50_ms:.2f} ms, p99 {grpc_txns.p99_ms:.2f} ms" +
          ("; the unit (1 commit)" if txns is grpc_txns else "")),
         ("project lock (distlock, etcd)", project_rate, ratio(project_rate, limit), skipped),
         ("etcd concurrency.Mutex (Go, in-process)", go_rate, ratio(go_rate, limit), go_skipped),
         ("etcdctl lock -- true", etcdctl_rate, ratio(etcdctl_rate, limit),
          "a process, a session and a lease per cycle")))

    def row(name: str, result: _Contended | None, note: str) -> tuple[Any, ...]:
        if result is None:
            return (name, None, None, None, None, None, None, None, None, None, None, note)
        return (name, result.holds, result.handoffs_per_second,
                ratio(result.handoffs_per_second, txns.per_second), result.mean_ms,
                result.p50_ms,
                result.p99_ms, ratio(result.p99_ms, txns.p50_ms),
                f"{'yes' if result.fifo else 'NO'}/{'yes' if result.exclusive else 'NO'}",
                result.client_cpu_per_1000, result.etcd_cpu_per_1000, note)

    contended = Table(
        f"one lock, {options.contenders} contending sessions",
        ("client", "holds", "handoffs/s", "vs txn rate", "mean ms", "p50 ms", "p99 ms",
         "p99 vs txn p50", "FIFO/exclusive", "client CPU s/1k", "etcd CPU s/1k", "note"),
        (row("project lock (distlock, etcd)", project, skipped or "a process per session"),
         row("etcd concurrency.Mutex (Go, in-process)", go,
             go_skipped or f"{options.contenders} sessions in one process; FIFO: grant "
             "revisions, always rising"),
         row("etcdctl lock", etcdctl, "each hold is a new etcdctl process")))
    # The Mutex algorithm's critical path per handoff, from parts measured just now.
    floor_ms = notify_ms + read_ms
    go_floor_ms = notify_ms + 2 * read_ms

    def both(values: dict[str, float]) -> str:
        return ", ".join(f"{api} {ms:.2f} ms" for api, ms in values.items())

    parts = Table(
        "a handoff's critical path, from raw operations measured in this run (p50)",
        ("step", "ms", "note"),
        (("holder's delete committed and seen by the next waiter's watch", notify_ms,
          f"put -> watch event, another client ({both(notifies)})"),
         ("waiter reads its key and the one ahead (one linearizable range)", read_ms,
          f"the Mutex's confirming read ({both(reads)})"),
         ("floor for one handoff (a watch event plus one read)", floor_ms,
          f"{1000 / floor_ms:.0f} handoffs/s = {1000 / floor_ms / txns.per_second:.2f}x "
          "the txn rate; the issue's floor"),
         ("floor without the read (distlock: the queue's deletions on its watch)", notify_ms,
          f"{1000 / notify_ms:.0f} handoffs/s = "
          f"{1000 / notify_ms / txns.per_second:.2f}x the txn rate"),
         ("floor with two reads (etcd's Go Mutex, etcdctl lock)", go_floor_ms,
          f"{1000 / go_floor_ms:.0f} handoffs/s = "
          f"{1000 / go_floor_ms / txns.per_second:.2f}x the txn rate"),
         ("if the waiter's watch starts at a revision already passed", catch_up_ms,
          "etcd catches such watchers up in a 100 ms loop; distlock watches from now")))
    report = Report("locks", {"contenders": options.contenders, "handoffs": options.handoffs,
                              "rounds": f"{_ROUNDS} each, Go Mutex and distlock alternating",
                              "cluster": "3 etcd members on loopback", "endpoint": "leader"},
                    [uncontended, contended, parts])
    floor_rate = 1000 / floor_ms
    report.targets = [
        Target("handoffs/s vs raw txn rate", ratio(project.handoffs_per_second,
                                                   txns.per_second) if project else None,
               0.5, True, "x", skipped),
        Target("handoffs/s vs the Go Mutex", ratio(project.handoffs_per_second,
                                                   go.handoffs_per_second)
               if project and go else None, 1.0, True, "x", skipped or go_skipped),
        Target("handoffs/s vs the computed floor", ratio(project.handoffs_per_second,
                                                         floor_rate) if project else None,
               0.7, True, "x", skipped),
        Target("p99 handoff vs one txn (p50)", ratio(project.p99_ms, txns.p50_ms)
               if project else None, 3.0, False, "x", skipped),
        Target("uncontended acquire+release vs the Go Mutex", ratio(project_rate, go_rate),
               0.8, True, "x", skipped or go_skipped),
    ]
    if project is not None and not (project.fifo and project.exclusive):
        report.notes.append("the project lock broke FIFO or exclusion in this run: a bug, "
                            "not a performance figure")
    return report


class _Gateway:
    """etcd's v3 JSON gateway over one keep-alive HTTP/1.1 connection, with http.client.

    The baseline must be the leanest client there is: measured here, requests adds about
    a millisecond of Python per call on this CPU (~40% of a transaction), which would
    flatter every ratio taken against it. http.client is also what distlock speaks.
    """

    def __init__(self, endpoint: str) -> None:
        url = urlsplit(endpoint)
        self._connection = http.client.HTTPConnection(url.hostname or LOCALHOST,
                                                      url.port or 2379, timeout=10)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self._connection.request("POST", path, json.dumps(body),
                                 {"Content-Type": "application/json"})
        response = self._connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"etcd {path} answered {response.status}: {payload[:200]!r}")
        result: dict[str, Any] = json.loads(payload)
        return result

    def stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """A streaming call's messages, one per line, until the server or close() ends it."""
        self._connection.request("POST", path, json.dumps(body),
                                 {"Content-Type": "application/json"})
        response = self._connection.getresponse()
        # close() from another thread pulls the socket and file from under readline(),
        # which then fails in one of these ways: all of them mean "stream over".
        with contextlib.suppress(OSError, ValueError, AttributeError, http.client.HTTPException):
            while line := response.readline():
                if line.strip():
                    yield json.loads(line)

    def close(self) -> None:
        sock = self._connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in stream()
        self._connection.close()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _raw_txns(endpoint: str, count: int) -> _Txns:
    """Sequential compare-and-swap: put only if the key is unchanged since our last put."""
    gateway = _Gateway(endpoint)
    try:
        key = _b64("bench/cas")
        revision = int(gateway.post("/v3/kv/put", {"key": key, "value": _b64("0")})
                       ["header"]["revision"])
        latencies = []
        started = time.monotonic()
        for i in range(count):
            before = time.monotonic()
            answer = gateway.post("/v3/kv/txn", {
                "compare": [{"key": key, "target": "MOD", "result": "EQUAL",
                             "mod_revision": str(revision)}],
                "success": [{"request_put": {"key": key, "value": _b64(str(i + 1))}}],
            })
            latencies.append(time.monotonic() - before)
            if not answer.get("succeeded"):
                raise RuntimeError(f"raw CAS txn {i} did not succeed: {answer}")
            revision = int(answer["header"]["revision"])
        elapsed = time.monotonic() - started
    finally:
        gateway.close()
    return _Txns(count / elapsed, percentile(latencies, 50) * 1000,
                 percentile(latencies, 99) * 1000)


def _raw_reads(endpoint: str, count: int) -> float:
    """p50 ms of a linearizable single-key range (what a waiter's checks cost)."""
    gateway = _Gateway(endpoint)
    try:
        key = _b64("bench/cas")
        latencies = []
        for _ in range(count):
            before = time.monotonic()
            gateway.post("/v3/kv/range", {"key": key})
            latencies.append(time.monotonic() - before)
    finally:
        gateway.close()
    return percentile(latencies, 50) * 1000


def _watch_delay(endpoint: str, count: int) -> float:
    """p50 ms from sending a put to another client's watch seeing it: commit + notify.

    This is the first half of every handoff (the holder's delete, seen by the next
    waiter's watch); one or two reads by the waiter follow it.
    """
    key = _b64("bench/watched")
    watcher = _Gateway(endpoint)
    writer = _Gateway(endpoint)
    seen: queue.Queue[float] = queue.Queue()

    def read_events() -> None:
        # The first message confirms the watch; every later one carries our put.
        for message in watcher.stream("/v3/watch", {"create_request": {"key": key}}):
            result = message.get("result", message)
            if result.get("created"):
                seen.put(0.0)
            if result.get("events"):
                seen.put(time.monotonic())

    reader = threading.Thread(target=read_events, daemon=True)
    reader.start()
    delays = []
    try:
        seen.get(timeout=10)  # created: puts from now on are seen
        for i in range(count):
            before = time.monotonic()
            writer.post("/v3/kv/put", {"key": key, "value": _b64(str(i))})
            delays.append(seen.get(timeout=10) - before)
    finally:
        watcher.close()
        writer.close()
        reader.join(timeout=5)
    return percentile(delays, 50) * 1000


def _catch_up_delay(endpoint: str, count: int) -> float:
    """p50 ms for a watch opened at a revision already written to deliver that event.

    A waiter watches its predecessor from the revision its last read saw; when anything
    was written since, etcd treats the new watcher as "unsynced" and replays history
    from a loop that runs every 100 ms (mvcc syncWatchersLoop), not at once. Whether a
    handoff pays this depends on how recently the waiter opened its watch.
    """
    key = _b64("bench/catch-up")
    writer = _Gateway(endpoint)
    delays = []
    try:
        for i in range(count):
            revision = int(writer.post("/v3/kv/put", {"key": key, "value": _b64(str(i))})
                           ["header"]["revision"])
            writer.post("/v3/kv/put", {"key": _b64("bench/other"), "value": ""})  # moves on
            watcher = _Gateway(endpoint)
            started = time.monotonic()
            try:
                for message in watcher.stream("/v3/watch", {"create_request": {
                        "key": key, "start_revision": str(revision)}}):
                    if message.get("result", message).get("events"):
                        delays.append(time.monotonic() - started)
                        break
            finally:
                watcher.close()
    finally:
        writer.close()
    return percentile(delays, 50) * 1000


class _Grpc:
    """etcd's gRPC API through one channel, with etcd's own messages: what distlock speaks,
    without distlock (no failover, no session), so its figures are the transport's own."""

    def __init__(self, endpoint: str) -> None:
        from distlock._etcdpb import rpc_pb2  # noqa: PLC0415 - the generated messages only

        url = urlsplit(endpoint)
        self.pb = rpc_pb2
        self._channel = grpc.insecure_channel(f"{url.hostname or LOCALHOST}:{url.port or 2379}")
        self.txn = self._unary("KV/Txn", rpc_pb2.TxnRequest, rpc_pb2.TxnResponse)
        self.range = self._unary("KV/Range", rpc_pb2.RangeRequest, rpc_pb2.RangeResponse)
        self.put = self._unary("KV/Put", rpc_pb2.PutRequest, rpc_pb2.PutResponse)

    def _unary(self, method: str, request: Any, response: Any) -> Any:
        return self._channel.unary_unary(f"/etcdserverpb.{method}",
                                         request_serializer=request.SerializeToString,
                                         response_deserializer=response.FromString)

    def watch(self, key: bytes) -> Any:
        """A Watch call on ``key`` from etcd's current revision: its responses, in order."""
        pb = self.pb
        call = self._channel.stream_stream("/etcdserverpb.Watch/Watch",
                                           request_serializer=pb.WatchRequest.SerializeToString,
                                           response_deserializer=pb.WatchResponse.FromString)
        first = pb.WatchRequest(create_request=pb.WatchCreateRequest(key=key))
        idle = threading.Event()

        def requests() -> Iterator[Any]:
            yield first
            idle.wait()  # keep the request side open until the call is cancelled

        responses = call(requests())
        responses.add_done_callback(lambda _call: idle.set())
        return responses

    def close(self) -> None:
        self._channel.close()


def _grpc_txns(endpoint: str, count: int) -> _Txns:
    """:func:`_raw_txns` over gRPC."""
    client = _Grpc(endpoint)
    pb = client.pb
    try:
        key = b"bench/cas-grpc"
        revision = int(client.put(pb.PutRequest(key=key, value=b"0"), timeout=10)
                       .header.revision)
        latencies = []
        started = time.monotonic()
        for i in range(count):
            before = time.monotonic()
            answer = client.txn(pb.TxnRequest(
                compare=[pb.Compare(key=key, target=pb.Compare.MOD, result=pb.Compare.EQUAL,
                                    mod_revision=revision)],
                success=[pb.RequestOp(request_put=pb.PutRequest(key=key,
                                                                value=str(i + 1).encode()))],
            ), timeout=10)
            latencies.append(time.monotonic() - before)
            if not answer.succeeded:
                raise RuntimeError(f"raw CAS txn {i} over gRPC did not succeed: {answer}")
            revision = int(answer.header.revision)
        elapsed = time.monotonic() - started
    finally:
        client.close()
    return _Txns(count / elapsed, percentile(latencies, 50) * 1000,
                 percentile(latencies, 99) * 1000)


def _grpc_reads(endpoint: str, count: int) -> float:
    """:func:`_raw_reads` over gRPC."""
    client = _Grpc(endpoint)
    try:
        request = client.pb.RangeRequest(key=b"bench/cas-grpc")
        latencies = []
        for _ in range(count):
            before = time.monotonic()
            client.range(request, timeout=10)
            latencies.append(time.monotonic() - before)
    finally:
        client.close()
    return percentile(latencies, 50) * 1000


def _grpc_watch_delay(endpoint: str, count: int) -> float:
    """:func:`_watch_delay` over gRPC: a put by one client, seen by another's watch."""
    watcher, writer = _Grpc(endpoint), _Grpc(endpoint)
    key = b"bench/watched-grpc"
    responses = watcher.watch(key)
    seen: queue.Queue[float] = queue.Queue()

    def read_events() -> None:
        with contextlib.suppress(grpc.RpcError):
            for message in responses:
                if message.created:
                    seen.put(0.0)
                if message.events:
                    seen.put(time.monotonic())

    reader = threading.Thread(target=read_events, daemon=True)
    reader.start()
    delays = []
    try:
        seen.get(timeout=10)  # created: puts from now on are seen
        for i in range(count):
            before = time.monotonic()
            writer.put(writer.pb.PutRequest(key=key, value=str(i).encode()), timeout=10)
            delays.append(seen.get(timeout=10) - before)
    finally:
        responses.cancel()
        reader.join(timeout=5)
        watcher.close()
        writer.close()
    return percentile(delays, 50) * 1000


_APIS = ("gateway", "gRPC")


@dataclass(frozen=True)
class _RawOps:
    """One measurement of the raw operations a handoff is judged by, over both APIs."""

    gateway_txns: _Txns
    grpc_txns: _Txns
    reads: dict[str, float]
    """p50 ms of a linearizable range, by API."""
    notifies: dict[str, float]
    """p50 ms from a put to another client's watch event, by API."""


def _raw_ops(endpoint: str, cycles: int) -> _RawOps:
    return _RawOps(_raw_txns(endpoint, max(200, cycles // 2)),
                   _grpc_txns(endpoint, max(200, cycles // 2)),
                   {"gateway": _raw_reads(endpoint, max(200, cycles // 2)),
                    "gRPC": _grpc_reads(endpoint, max(200, cycles // 2))},
                   {"gateway": _watch_delay(endpoint, max(50, cycles // 8)),
                    "gRPC": _grpc_watch_delay(endpoint, max(50, cycles // 8))})


def _median_txns(samples: Sequence[_Txns]) -> _Txns:
    return _Txns(statistics.median(t.per_second for t in samples),
                 statistics.median(t.p50_ms for t in samples),
                 statistics.median(t.p99_ms for t in samples))


def _etcdctl(endpoint: str) -> list[str]:
    return ["etcdctl", f"--endpoints={endpoint}", "--dial-timeout=5s"]


def _etcdctl_uncontended(endpoint: str, cycles: int) -> float:
    started = time.monotonic()
    for _ in range(cycles):
        subprocess.run([*_etcdctl(endpoint), "lock", f"{_LOCK_NAME}-solo", "--", "true"],
                       check=True, capture_output=True, timeout=60)
    return cycles / (time.monotonic() - started)


# Runs inside the lock: a timestamp on entry and on exit, and the fencing revision.
# EPOCHREALTIME is a bash builtin, so no process is spawned inside the hold.
_ETCDCTL_HOLD = 'a=$EPOCHREALTIME; printf "%s %s %s\\n" "$a" "$EPOCHREALTIME" ' \
                '"$ETCD_LOCK_REV" >> "$HOLDS_FILE"'


def _etcdctl_contended(endpoint: str, base: Path, options: LocksOptions) -> list[_Hold]:
    holds_file = base / "etcdctl-holds.txt"
    remaining = [options.handoffs]
    guard = threading.Lock()
    errors: list[str] = []

    def contender() -> None:
        while True:
            with guard:
                if remaining[0] <= 0 or errors:
                    return
                remaining[0] -= 1
            result = subprocess.run(
                [*_etcdctl(endpoint), "lock", _LOCK_NAME, "--", "bash", "-c", _ETCDCTL_HOLD],
                capture_output=True, text=True, timeout=120, check=False,
                env={"HOLDS_FILE": str(holds_file), "PATH": "/usr/bin:/bin"})
            if result.returncode != 0:
                with guard:
                    errors.append(result.stderr.strip())
                return

    threads = [threading.Thread(target=contender) for _ in range(options.contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"etcdctl lock failed: {errors[0]}")
    holds = []
    for line in holds_file.read_text().splitlines():
        acquired, released, token = line.split()
        holds.append(_Hold(float(acquired), float(released), int(token)))
    return holds


def _summarize(*rounds: Sequence[_Hold]) -> _Contended:
    """One contended figure from one or more runs (rounds) of the same client: gaps and
    spans are taken within each round, then pooled."""
    gaps: list[float] = []
    span = 0.0
    fifo = True
    holds = 0
    for holds_of_round in rounds:
        ordered = sorted(holds_of_round, key=lambda h: h.acquired)
        gaps += [b.acquired - a.released for a, b in itertools.pairwise(ordered)]
        span += ordered[-1].acquired - ordered[0].acquired
        fifo = fifo and all(a.token < b.token for a, b in itertools.pairwise(ordered))
        holds += len(ordered)
    exclusive = all(gap >= 0 for gap in gaps)
    return _Contended(holds, len(gaps) / span if span > 0 else float("nan"),
                      statistics.fmean(gaps) * 1000, percentile(gaps, 50) * 1000,
                      percentile(gaps, 99) * 1000, fifo, exclusive)


_Run = Callable[[Callable[[], None]], tuple[list["_Hold"], float]]
"""One contended run: its holds and the CPU seconds its client processes spent. It is
given a callable to call when its clock starts (after its clients opened their sessions),
from which etcd's CPU is counted."""


class _CpuMeter:
    """CPU seconds the etcd members spend, read from /proc around each contended run."""

    def __init__(self, pids: Sequence[int]) -> None:
        self._pids = list(pids)
        self._tick = os.sysconf("SC_CLK_TCK")

    def seconds(self) -> float:
        total = 0
        for pid in self._pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        return total / self._tick

    def charge(self, runs: Sequence[_Run]) -> _Contended:
        """Run each of ``runs`` and summarize them as one, with the CPU per 1,000
        handoffs of the clients and of etcd."""
        return self.charge_alternately(runs, [])[0] or _EMPTY

    def charge_alternately(self, first: Sequence[_Run], second: Sequence[_Run], *,
                           before_round: Callable[[], None] = lambda: None,
                           ) -> tuple[_Contended | None, _Contended | None]:
        """Runs of two clients, alternating (first[0], second[0], first[1], ...), each
        client's summarized with its CPU; None for a client with no runs.
        ``before_round`` runs before each pair, uncharged."""
        rounds: tuple[list[list[_Hold]], list[list[_Hold]]] = ([], [])
        cpu = [[0.0, 0.0], [0.0, 0.0]]  # [client, etcd] per side
        for index in range(max(len(first), len(second), 1)):
            before_round()
            for side, runs in enumerate((first, second)):
                if index >= len(runs):
                    continue
                before = [self.seconds()]

                def started(before: list[float] = before) -> None:
                    before[0] = self.seconds()

                holds, client_cpu = runs[index](started)
                cpu[side][1] += self.seconds() - before[0]
                cpu[side][0] += client_cpu
                rounds[side].append(holds)
        results: list[_Contended | None] = []
        for side in (0, 1):
            if not rounds[side]:
                results.append(None)
                continue
            result = _summarize(*rounds[side])
            per = 1000 / max(result.holds, 1)
            results.append(dataclasses.replace(result, client_cpu_per_1000=cpu[side][0] * per,
                                               etcd_cpu_per_1000=cpu[side][1] * per))
        return results[0], results[1]


_EMPTY = _Contended(0, float("nan"), float("nan"), float("nan"), float("nan"), True, True)


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _with_children_cpu(run: Callable[[], list[_Hold]]) -> tuple[list[_Hold], float]:
    """``run``'s holds and the CPU seconds of the child processes it waited for."""
    before = _cpu(resource.RUSAGE_CHILDREN)
    result = run()
    return result, _cpu(resource.RUSAGE_CHILDREN) - before


def _go_mutex_bench() -> str:
    """The etcd-mutex-bench binary scripts/build-tools.sh builds, or why it is missing."""
    override = os.environ.get("ETCD_MUTEX_BENCH")  # a build of one's own, while developing
    built = find_tool("etcd-mutex-bench")
    if override:
        return override
    if built is None:
        raise _NotLanded(f"etcd-mutex-bench is not built in {bin_dir()} ({BUILD_COMMAND})")
    return str(built)


def _run_go_mutex(endpoint: str, *, cycles: int, handoffs: int,
                  contenders: int) -> dict[str, Any]:
    result = subprocess.run(
        [_go_mutex_bench(), f"--endpoints={endpoint}", f"--cycles={cycles}",
         f"--handoffs={handoffs}", f"--contenders={contenders}", f"--ttl={int(_TTL)}"],
        capture_output=True, text=True, timeout=_RUN_TIMEOUT, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"etcd-mutex-bench failed: {result.stderr.strip()}")
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def _go_uncontended(endpoint: str, cycles: int) -> float:
    answer = _run_go_mutex(endpoint, cycles=cycles, handoffs=0, contenders=2)
    return float(answer["uncontended_per_second"])


def _go_contended(endpoint: str, options: LocksOptions,
                  handoffs: int) -> tuple[list[_Hold], float]:
    """One contended run of the Go Mutex: its holds and the CPU seconds it spent."""
    def run() -> list[_Hold]:
        answer = _run_go_mutex(endpoint, cycles=0, handoffs=handoffs,
                               contenders=options.contenders)
        return [_Hold(h["acquired"], h["released"], h["token"]) for h in answer["holds"]]

    return _with_children_cpu(run)


def _open_project_backend(endpoint: str) -> Any:
    from distlock import BackendOptions, open_backend  # noqa: PLC0415 - may not exist yet

    try:
        return open_backend("etcd", BackendOptions(endpoints=(endpoint,), ttl=_TTL))
    except ValueError as error:
        raise _NotLanded(str(error)) from None


def _project_uncontended(endpoint: str, cycles: int) -> float:
    backend = _open_project_backend(endpoint)
    try:
        lock = backend.lock(f"{_LOCK_NAME}-solo")
        started = time.monotonic()
        for _ in range(cycles):
            lock.acquire()
            lock.release()
        return cycles / (time.monotonic() - started)
    finally:
        backend.close()


def _project_contended(endpoint: str, base: Path, options: LocksOptions,
                       handoffs: int, started: Callable[[], None]) -> tuple[list[_Hold], float]:
    """The holds of every contender and the CPU seconds they spent contending."""
    records, cpu = run_contenders(_contend, (endpoint,), base, options.contenders, handoffs,
                                  started)
    return [_Hold(*record) for record in records], cpu


def run_contenders(target: Callable[..., None], args: tuple[Any, ...], base: Path,  # noqa: PLR0917
                   contenders: int, handoffs: int,
                   on_start: Callable[[], None] | None = None) -> tuple[list[list[Any]], float]:
    """Run ``target(*args, remaining, barrier, out)`` in ``contenders`` processes that
    share a budget of ``handoffs`` acquisitions; the clock starts when every one has
    its session (the barrier; ``on_start`` runs then). Returns every record the
    processes wrote to ``out`` (through :func:`hold_loop`) and the CPU seconds they
    spent contending."""
    context = multiprocessing.get_context("spawn")
    remaining = context.Value("i", handoffs)
    barrier = context.Barrier(contenders + 1)
    outputs = [base / f"project-holds-{i}.json" for i in range(contenders)]
    processes = [context.Process(target=target, args=(*args, remaining, barrier, out),
                                 name=f"bench-lock-contender-{i}")
                 for i, out in enumerate(outputs)]
    for process in processes:
        process.start()
    try:
        barrier.wait(timeout=120)  # every contender has its session: start the clock
        if on_start is not None:
            on_start()
        deadline = time.monotonic() + _RUN_TIMEOUT
        for process in processes:
            process.join(max(0.1, deadline - time.monotonic()))
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
    failed = [p.name for p in processes if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"lock contenders failed: {', '.join(failed)}")
    answers = [json.loads(out.read_text()) for out in outputs]
    return ([record for answer in answers for record in answer["holds"]],
            sum(answer["cpu"] for answer in answers))


def _contend(endpoint: str, remaining: Synchronized[int], barrier: Barrier, out: Path) -> None:
    """One contender process: its own session, acquire/release until the budget is spent."""
    hold_loop(_open_project_backend(endpoint), _LOCK_NAME, remaining, barrier, out)


def hold_loop(backend: Any, lock_name: str, remaining: Synchronized[int], barrier: Barrier,
              out: Path, *, tag: Callable[[int], int] = int) -> None:
    """Acquire and release ``lock_name`` through ``backend`` (then closed) until the shared
    budget is spent; writes {"holds": [(acquired, released, tag(token))], "cpu": CPU
    seconds from the barrier to the last release} to ``out``."""
    records: list[tuple[float, float, int]] = []
    try:
        lock = backend.lock(lock_name)
        barrier.wait(timeout=120)
        cpu = _cpu(resource.RUSAGE_SELF)  # every thread's, the transport's included
        while True:
            with remaining.get_lock():
                if remaining.value <= 0:
                    break
                remaining.value -= 1
            token = lock.acquire()
            acquired = time.time()
            released = time.time()
            lock.release()
            records.append((acquired, released, tag(token)))
        cpu = _cpu(resource.RUSAGE_SELF) - cpu
    finally:
        backend.close()
    out.write_text(json.dumps({"holds": records, "cpu": cpu}))


__all__ = ["LocksOptions", "run"]
