"""The scheduled backup's Job: one complete backup per slot, from a healthy replica.

A CronJob cannot take the backup itself: ``backup.sh`` needs a server's data dir, and that is
a ReadWriteOnce PVC only the server's own pod mounts. So the Job (run under the cluster's
FIFO lock by ``python -m distlock run``, which hands it the fencing token as
``DISTLOCK_TOKEN``) asks the ``backup-agent`` sidecar of a MySQL pod to run ``backup.sh``
there, over that sidecar's port (``backup-agent.sh``), and waits for its answer:

    Job -> agent   backup SLOT TOKEN replica|primary
    agent -> Job   log TEXT          (progress; at least every few seconds while it runs)
                   ok SUMMARY-JSON   (the manifest was written)
                   refused REASON    (not this pod: wrong role, or not a healthy replica)
                   failed REASON     (backup.sh failed; no manifest)

Which pod: every pod is asked for a ``replica`` backup first, in ordinal order; each agent
accepts only while its pod is a recorded replica that passes the readiness rule
(``probe.sh readiness``: both replication threads running, lag within bounds), so a stale or
broken copy is never backed up. Only when no replica accepts is the recorded primary asked,
so the primary carries a backup's load only when there is nothing else.

Why one per slot, even with two triggers racing (a retried Job pod, a manual ``kubectl create
job --from``, ``concurrencyPolicy`` not honoured across a controller restart): the lock puts
them one after the other, and each checks, once it holds the lock, whether its slot already
has a complete backup; the second finds the first's manifest and does nothing. The slot is
the Job's name, which a CronJob derives from the scheduled time, so retries of one Job share
it. A holder whose lease lapsed mid-backup is stopped by distlock (exit 76), its agent stops
the backup when the connection goes, and ``write-manifest`` refuses a manifest whose token is
older than one already written (catalog.manifest_refusal), so a lapsed holder never adds a
second backup.

Failures are visible as the Job's status: this exits non-zero naming every pod's answer, and
the CronJob keeps failed Jobs (and their logs) for inspection.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mysqlbackup import catalog
from mysqlbackup.store import Store, StoreError

MODES = ("replica", "primary")


def _say(text: str) -> None:
    """Progress for the Job's log (stderr; stdout carries the result)."""
    sys.stderr.write(f"{text}\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class Peer:
    host: str
    port: int

    @staticmethod
    def parse(text: str) -> Peer:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"peer {text!r} is not HOST:PORT")
        return Peer(host, int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Answer:
    verdict: str  # ok, refused, failed
    detail: str


def ask(peer: Peer, request: str, *, connect_timeout: float, idle_timeout: float) -> Answer:
    """One request to one agent; its ``log`` lines go to stderr as they come."""
    try:
        with socket.create_connection((peer.host, peer.port), timeout=connect_timeout) as conn:
            # The agent writes at least every few seconds while a backup runs: silence this
            # long means it is gone or stuck.
            conn.settimeout(idle_timeout)
            conn.sendall(request.encode() + b"\n")
            with conn.makefile("r", encoding="utf-8", errors="replace") as reader:
                for line in reader:
                    verdict, _, detail = line.rstrip("\n").partition(" ")
                    if verdict == "log":
                        _say(f"{peer}: {detail}")
                    elif verdict in ("ok", "refused", "failed"):
                        return Answer(verdict, detail)
    except OSError as error:
        return Answer("failed", f"no answer ({error})")
    return Answer("failed", "the agent closed the connection without an answer")


def run(store: Store, *, slot: str, fencing_token: int, peers: Sequence[Peer],
        connect_timeout: float = 10, idle_timeout: float = 300) -> dict[str, Any]:
    """One scheduled backup for ``slot`` (see the module docstring); raises StoreError,
    naming each pod's answer, when no pod produced it."""
    if not peers:
        raise ValueError("no peers to ask for a backup")
    store.check()
    done = catalog.slot_backup(catalog.list_backups(store).complete, slot)
    if done is not None:
        _say(f"slot {slot} already has the complete backup {done.id}: nothing to do")
        return {"slot": slot, "backup": done.id, "already": True}
    answers: list[str] = []
    for mode in MODES:
        for peer in peers:
            answer = ask(peer, f"backup {slot} {fencing_token} {mode}",
                         connect_timeout=connect_timeout, idle_timeout=idle_timeout)
            if answer.verdict == "ok":
                summary = json.loads(answer.detail)
                _say(f"slot {slot}: backup {summary.get('id')} from {peer} ({mode})")
                return {"slot": slot, "backup": summary.get("id"), "from": str(peer),
                        "mode": mode, "summary": summary}
            answers.append(f"{peer} as {mode}: {answer.verdict}: {answer.detail}")
            _say(answers[-1])
    raise StoreError(f"no backup for slot {slot}; " + "; ".join(answers))
