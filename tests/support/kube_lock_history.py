"""A Lock object's whole history from the API server's own watch, and the FIFO check on it.

The Kubernetes lock backend promises that the next holder is the first waiter in the
queue, in order of arrival (an entry joins at the back and leaves only by being granted
or by its owner dying or giving up). Clients cannot see that from inside, and timing
their calls does not prove it either; the object's history can. A Kubernetes watch
delivers one event per change of the object, none merged, so the statuses recorded
here are every state the lock went through, and :func:`fifo_violations` checks each
step against the promise. The conformance tests assert on it; the kube-locks benchmark
(bench/kube_locks.py) reports it next to the rate, so a fast run that is not FIFO shows.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

from distlock.kube import GROUP, PLURAL, VERSION

STOP_WAIT = 30.0


class StateHistory(threading.Thread):
    """Every status one Lock object goes through after ``since``, in order.

    When the server ends a stream (``timeout_seconds``), the next resumes from the last
    resourceVersion seen, which loses nothing: the watch replays what came after it."""

    def __init__(self, api_client: Any, namespace: str, obj_name: str, since: str) -> None:
        super().__init__(daemon=True, name=f"lock-history-{obj_name}")
        self.api = k8s.CustomObjectsApi(api_client)
        self.namespace, self.obj_name, self.since = namespace, obj_name, since
        self.states: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                stream = k8s_watch.Watch().stream(  # type: ignore[no-untyped-call]
                    self.api.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                    PLURAL, field_selector=f"metadata.name={self.obj_name}",
                    resource_version=self.since, timeout_seconds=1)
                for event in stream:
                    obj = event["object"]
                    if event["type"] != "MODIFIED":
                        raise RuntimeError(f"unexpected watch event {event['type']}: {obj}")
                    self.since = obj["metadata"]["resourceVersion"]
                    self.states.append(dict(obj.get("status") or {}))
        except BaseException as error:  # noqa: BLE001 - reported by stop()
            self.error = error

    def token(self) -> int:
        """The fencing token of the latest state seen (0 before any)."""
        return int(self.states[-1].get("fencingToken", 0)) if self.states else 0

    def stop(self) -> list[dict[str, Any]]:
        self.stopping.set()
        self.join(STOP_WAIT)
        if self.is_alive():
            raise RuntimeError("the lock history watch did not stop")
        if self.error is not None:
            raise self.error
        return self.states


def _queue(status: dict[str, Any]) -> list[str]:
    return [str(w["identity"]) for w in status.get("waiters") or []]


def grants(first: dict[str, Any], states: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """(token, holder) of every grant in the history, in order."""
    return [(int(after["fencingToken"]), str(after.get("holder")))
            for before, after in itertools.pairwise([first, *states])
            if int(after.get("fencingToken", 0)) != int(before.get("fencingToken", 0))]


def fifo_violations(first: dict[str, Any], states: list[dict[str, Any]], *,
                    nobody_leaves: bool = True) -> list[str]:
    """Every step that broke the queue's order: a grant not to the first waiter, a token
    not one up, an entry that joined ahead of others or was reordered, and (with
    ``nobody_leaves``: no contender died or gave up) one that left ungranted."""
    found: list[str] = []
    for before, after in itertools.pairwise([first, *states]):
        queue_before, queue_after = _queue(before), _queue(after)
        token_before = int(before.get("fencingToken", 0))
        token_after = int(after.get("fencingToken", 0))
        new_holder = str(after.get("holder")) if token_after != token_before else None
        if new_holder is not None:
            if token_after != token_before + 1:
                found.append(f"the token went from {token_before} to {token_after}")
            if queue_before and new_holder != queue_before[0]:
                found.append(f"token {token_after} went to {new_holder}, not to the first "
                             f"in the queue {queue_before}")
        removed = [w for w in queue_before if w not in queue_after]
        if nobody_leaves and not set(removed) <= {new_holder}:
            found.append(f"{sorted(set(removed) - {new_holder})} left the queue "
                         f"{queue_before} without being granted (token {token_after})")
        kept = [w for w in queue_after if w in queue_before]
        if kept != [w for w in queue_before if w not in removed]:
            found.append(f"the queue was reordered: {queue_before} -> {queue_after}")
        if queue_after[len(kept):] != [w for w in queue_after if w not in queue_before]:
            found.append(f"an entry joined ahead of others: {queue_before} -> {queue_after}")
    return found


__all__ = ["StateHistory", "fifo_violations", "grants"]
