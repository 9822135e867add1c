"""An in-process fake of the Kubernetes API server, over real HTTP on 127.0.0.1.

There is no cluster here and none can be had, yet the Lock CRD provider and the
Kubernetes lock backend must be tested through the *official* ``kubernetes`` client,
with a kubeconfig, exactly as they run against a real API server. So this is not a
mock of the client: it is a small HTTP server that speaks the API server's wire
protocol for the parts we use, and reproduces the semantics those parts depend on:

- ``metadata.resourceVersion`` from one cluster-wide counter (etcd's revision in a real
  server); a PUT or conditional PATCH/DELETE with a stale one is ``409 Conflict``; a PUT
  without one on a custom resource or CRD is ``422 Invalid`` (they do not allow
  unconditional updates); a write that changes nothing does not bump it.
- ``404 NotFound`` (unknown object, unknown namespace, a custom resource whose CRD does
  not exist or is not yet Established), ``409 AlreadyExists`` on create.
- watch (``?watch=true``) streaming newline-delimited JSON events from a
  resourceVersion; without one (or with ``"0"``) synthetic ADDED events for what
  exists first; after :meth:`FakeKubeServer.compact` a watch from an older version gets
  an ``ERROR`` event with a ``410`` ``Expired`` Status on a ``200`` stream, which is what
  the real server sends (kubernetes/kubernetes#25151), and a client must re-list.
- CRDs: name must be ``<plural>.<group>``; once created they report ``NamesAccepted``
  and ``Established`` conditions (tests can hold establishment back) and serve their
  custom resources; deleting a CRD deletes every object of it, as the real server does.
- custom resources are validated against the CRD's structural ``openAPIV3Schema``
  (types, required, enums, bounds, patterns) and unknown fields are pruned; with the
  status subresource, writes to the object ignore ``status`` and writes to
  ``/status`` change nothing else; ``metadata.generation`` counts spec changes.
- bearer-token authentication (``401`` without it), so a test proves the client
  really sent the kubeconfig's credentials.

Not reproduced (documented in the README): RBAC authorization, admission, finalizers
other than the CRD cleanup, server-side apply, strategic merge patch (custom resources
reject it with ``415`` here as in a real server), protobuf, and pagination.

Fault hooks for tests: :meth:`compact` (force 410 on older watches), :meth:`close_watches`
(drop every open watch, as an API server restart does), :meth:`lose_next_responses` (apply
a write but drop the connection before answering, as a lost response does),
:meth:`unreachable` (a hung or refusing server, then the same server back), and
``establish=False`` with :meth:`establish` (a CRD that is slow to become Established).
"""

from __future__ import annotations

import contextlib
import copy
import http.server
import json
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support.procs import LOCALHOST

JSON = dict[str, Any]

CRD_GROUP = "apiextensions.k8s.io"
CRD_PLURAL = "customresourcedefinitions"
CRD_KEY = (CRD_GROUP, CRD_PLURAL)
NAMESPACE_KEY = ("", "namespaces")
CONFIGMAP_KEY = ("", "configmaps")
DEFAULT_TOKEN = "fake-kube-token"


class ApiError(Exception):
    """Becomes a ``kind: Status`` failure response, shaped as the real server's."""

    def __init__(self, code: int, reason: str, message: str, *,
                 details: JSON | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def status(self) -> JSON:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "details": self.details,
                "code": self.code}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _not_found(resource: str, name: str, group: str = "") -> ApiError:
    qualified = f"{resource}.{group}" if group else resource
    return ApiError(404, "NotFound", f'{qualified} "{name}" not found',
                    details={"name": name, "group": group, "kind": resource})


# ---------------------------------------------------------------------------------
# Structural schema validation and pruning (the subset of OpenAPI v3 CRDs use).
# ---------------------------------------------------------------------------------

_TYPES: dict[str, Callable[[object], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}


def validate_schema(  # noqa: PLR0912 - one branch per schema keyword reads best
        value: object, schema: Mapping[str, Any], path: str = "") -> list[str]:
    """Problems with ``value`` under ``schema``, phrased as the API server's field errors."""
    problems: list[str] = []
    if value is None:
        if not schema.get("nullable"):
            problems.append(f"{path}: Invalid value: \"null\": {path} in body must be of type "
                            f"{schema.get('type', 'object')}")
        return problems
    expected = schema.get("type")
    if expected and not _TYPES[expected](value):
        return [f"{path}: Invalid value: {json.dumps(value)}: {path} in body must be of type "
                f"{expected}"]
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(json.dumps(e) for e in schema["enum"])
        problems.append(f"{path}: Unsupported value: {json.dumps(value)}: supported values: "
                        f"{allowed}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{path}: Invalid value: {value}: {path} in body should be greater "
                            f"than or equal to {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{path}: Invalid value: {value}: {path} in body should be less "
                            f"than or equal to {schema['maximum']}")
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            problems.append(f"{path}: Too long: may not be more than {schema['maxLength']} "
                            "bytes")
        if "minLength" in schema and len(value) < schema["minLength"]:
            problems.append(f"{path}: Invalid value: {json.dumps(value)}: {path} in body should "
                            f"be at least {schema['minLength']} chars long")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            problems.append(f"{path}: Invalid value: {json.dumps(value)}: {path} in body should "
                            f"match '{schema['pattern']}'")
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            problems.append(f"{path}: Too many: {len(value)}: must have at most "
                            f"{schema['maxItems']} items")
        for index, item in enumerate(value):
            problems += validate_schema(item, schema.get("items", {}), f"{path}[{index}]")
    if isinstance(value, dict):
        for required in schema.get("required", []):
            if required not in value:
                problems.append(f"{path}.{required}: Required value".lstrip("."))
        properties = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            child = f"{path}.{key}".lstrip(".")
            if key in properties:
                problems += validate_schema(item, properties[key], child)
            elif isinstance(additional, dict):
                problems += validate_schema(item, additional, child)
    return problems


def prune(value: object, schema: Mapping[str, Any]) -> object:
    """Drop fields the schema does not declare, as structural schemas require."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return value
    if isinstance(value, dict):
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        if properties is None and additional is None:
            return value
        result = {}
        for key, item in value.items():
            if properties and key in properties:
                result[key] = prune(item, properties[key])
            elif isinstance(additional, dict):
                result[key] = prune(item, additional)
        return result
    if isinstance(value, list):
        return [prune(item, schema.get("items", {})) for item in value]
    return value


# ---------------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Kind:
    """What the server knows about one resource type."""

    group: str
    plural: str
    kind: str
    api_version: str
    namespaced: bool
    status_subresource: bool
    schema: JSON | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)


_BUILTIN_KINDS = {
    NAMESPACE_KEY: _Kind("", "namespaces", "Namespace", "v1", False, True),
    # The switchover's primary record is a ConfigMap (components/mysql/_record.py).
    CONFIGMAP_KEY: _Kind("", "configmaps", "ConfigMap", "v1", True, False),
    CRD_KEY: _Kind(CRD_GROUP, CRD_PLURAL, "CustomResourceDefinition", f"{CRD_GROUP}/v1", False,
                   True),
}


@dataclass
class _Event:
    resource_version: int
    type: str
    kind_key: tuple[str, str]
    object: JSON


@dataclass
class _Watch:
    kind_key: tuple[str, str]
    namespace: str | None
    matches: Callable[[JSON], bool]
    closed: bool = False


@dataclass
class _Faults:
    lose_responses: int = 0
    lose_methods: frozenset[str] = frozenset()


@dataclass
class _Store:
    revision: int = 1
    # Events with a resourceVersion at or below this are compacted away.
    compacted: int = 0
    # How many watches were answered with 410 Expired (tests prove a re-list happened).
    expired_watches: int = 0
    objects: dict[tuple[tuple[str, str], str, str], JSON] = field(default_factory=dict)
    history: list[_Event] = field(default_factory=list)
    watches: list[_Watch] = field(default_factory=list)


def _selector(query: Mapping[str, str]) -> Callable[[JSON], bool]:
    """fieldSelector (metadata.name / metadata.namespace) and equality labelSelector."""
    fields = [p.split("=", 1) for p in query.get("fieldSelector", "").split(",") if p]
    labels = [p.split("=", 1) for p in query.get("labelSelector", "").split(",") if p]
    for name, _ in fields:
        if name.rstrip("=") not in ("metadata.name", "metadata.namespace"):
            raise ApiError(400, "BadRequest", f'"{name}" is not a known field selector: only '
                           '"metadata.name", "metadata.namespace"')

    def matches(obj: JSON) -> bool:
        meta = obj.get("metadata", {})
        for name, value in fields:
            if meta.get(name.split(".", 1)[1].rstrip("="), "") != value.lstrip("="):
                return False
        object_labels = meta.get("labels") or {}
        return all(object_labels.get(k.rstrip("=")) == v.lstrip("=") for k, v in labels)

    return matches


class FakeKubeServer:
    """The fake API server. Start with :meth:`start` (or use as a context manager).

    ``token``: the bearer token clients must send (``None`` disables authentication).
    ``establish``: whether new CRDs become Established at once; when ``False`` a test
    calls :meth:`establish` itself. ``history_limit``: keep at most this many watch
    events (older ones are compacted, as etcd compacts after about five minutes).
    """

    def __init__(self, *, token: str | None = DEFAULT_TOKEN, establish: bool = True,
                 history_limit: int = 10_000) -> None:
        self.token = token
        self.auto_establish = establish
        self.history_limit = history_limit
        self._cond = threading.Condition()
        self._store = _Store()
        self._faults = _Faults()
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.requests: list[tuple[str, str]] = []
        self._connections: set[Any] = set()
        self._refusing = False
        self._hanging = False
        with self._cond:
            for namespace in ("default", "kube-system"):
                self.create_namespace(namespace)

    def create_namespace(self, name: str) -> None:
        """Namespaced objects need their namespace to exist, as on a real server."""
        with self._cond:
            if (NAMESPACE_KEY, "", name) not in self._store.objects:
                self._insert(NAMESPACE_KEY, "", {"apiVersion": "v1", "kind": "Namespace",
                                                 "metadata": {"name": name}})

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> FakeKubeServer:
        server = self

        class Handler(_Handler):
            fake = server

        self._httpd = http.server.ThreadingHTTPServer((LOCALHOST, 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        name="fake-kube", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut every open connection, as a dead API server would.

        Closing the listener alone is not enough: clients keep pooled keep-alive
        connections, and their handler threads would go on answering.
        """
        self.close_watches()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        with self._cond:
            connections, self._connections = set(self._connections), set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(2)

    def __enter__(self) -> FakeKubeServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "the fake API server is not started"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def kubeconfig(self, *, namespace: str = "default", context: str = "fake") -> JSON:
        """A kubeconfig document pointing at this server, with its bearer token."""
        user: JSON = {"token": self.token} if self.token else {}
        return {
            "apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake-user", "user": user}],
            "contexts": [{"name": context, "context": {"cluster": "fake", "user": "fake-user",
                                                       "namespace": namespace}}],
        }

    def write_kubeconfig(self, path: Path, **kwargs: Any) -> Path:
        path.write_text(json.dumps(self.kubeconfig(**kwargs), indent=2))
        return path

    # -- test hooks ------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._store.revision

    def compact(self) -> int:
        """Forget all watch history: a watch from any older resourceVersion gets 410."""
        with self._cond:
            self._store.compacted = self._store.revision
            self._store.history.clear()
            return self._store.compacted

    @contextlib.contextmanager
    def unreachable(self, *, hang: bool = True) -> Iterator[None]:
        """While inside, no client gets an answer; on exit the same server serves again.

        ``hang=True`` (the default, and the nastier case, like a frozen process):
        connections are accepted and requests read, but nothing is answered until the
        block ends, when those connections are closed; a client must give up on its
        own timeouts. ``hang=False``: open connections are cut and new ones closed at
        once (a crashed server, connection refused/reset). Nothing stored is lost.
        """
        with self._cond:
            self._refusing = True
            self._hanging = hang
            connections = set(self._connections)
        if not hang:
            self.close_watches()
            for connection in connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(2)
        try:
            yield
        finally:
            with self._cond:
                self._refusing = False
                self._cond.notify_all()

    def _turn_away(self, connection: Any) -> None:
        """Handle a connection while unreachable: hang until reachable, or cut it now."""
        with self._cond:
            while self._refusing and self._hanging and self._httpd is not None:
                self._cond.wait(0.5)
        with contextlib.suppress(OSError):
            connection.shutdown(2)

    def close_watches(self) -> None:
        """End every open watch stream, as an API server restart or a timeout does."""
        with self._cond:
            for watch in self._store.watches:
                watch.closed = True
            self._cond.notify_all()

    @property
    def expired_watches(self) -> int:
        """How many watches were ended with a 410 Expired event so far."""
        with self._cond:
            return self._store.expired_watches

    @property
    def pending_lost_responses(self) -> int:
        """Writes still to be applied-but-unanswered from :meth:`lose_next_responses`."""
        with self._cond:
            return self._faults.lose_responses

    def open_watches(self) -> int:
        with self._cond:
            return sum(1 for w in self._store.watches if not w.closed)

    def lose_next_responses(self, count: int = 1,
                            methods: tuple[str, ...] = ("POST", "PUT", "PATCH", "DELETE")) -> None:
        """Apply the next ``count`` writes but close the connection instead of answering."""
        with self._cond:
            self._faults = _Faults(count, frozenset(methods))

    def establish(self, name: str) -> None:
        """Mark a CRD Established (when the server was started with ``establish=False``)."""
        with self._cond:
            crd = self._get(CRD_KEY, "", name)
            self._set_established(crd, True)
            self._commit(CRD_KEY, "", crd, "MODIFIED")

    def get_object(self, group: str, plural: str, namespace: str, name: str) -> JSON | None:
        with self._cond:
            obj = self._store.objects.get(((group, plural), namespace, name))
            return copy.deepcopy(obj) if obj else None

    def put_object(self, group: str, plural: str, namespace: str, obj: JSON) -> JSON:
        """Create or overwrite an object behind the API's back (test setup only)."""
        with self._cond:
            key = (group, plural)
            name = obj["metadata"]["name"]
            exists = (key, namespace, name) in self._store.objects
            stored = self._insert(key, namespace, copy.deepcopy(obj)) if not exists else None
            if stored is None:
                stored = copy.deepcopy(obj)
                stored["metadata"] = {**self._store.objects[(key, namespace, name)]["metadata"],
                                      **obj.get("metadata", {})}
                self._commit(key, namespace, stored, "MODIFIED")
            return copy.deepcopy(stored)

    # -- storage (call with self._cond held) ------------------------------------------

    def _kind(self, group: str, plural: str, version: str | None = None) -> _Kind:
        builtin = _BUILTIN_KINDS.get((group, plural))
        if builtin is not None:
            return builtin
        crd = self._store.objects.get((CRD_KEY, "", f"{plural}.{group}"))
        if crd is None or not self._is_established(crd):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        spec = crd["spec"]
        versions = {v["name"]: v for v in spec["versions"] if v.get("served", True)}
        storage = next(v for v in spec["versions"] if v.get("storage"))
        chosen = versions.get(version or storage["name"])
        if chosen is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return _Kind(group, plural, spec["names"]["kind"], f"{group}/{chosen['name']}",
                     spec["scope"] == "Namespaced",
                     "status" in (chosen.get("subresources") or {}),
                     (chosen.get("schema") or {}).get("openAPIV3Schema"))

    @staticmethod
    def _is_established(crd: JSON) -> bool:
        return any(c["type"] == "Established" and c["status"] == "True"
                   for c in crd.get("status", {}).get("conditions", []))

    @staticmethod
    def _set_established(crd: JSON, established: bool) -> None:
        now = _now()
        crd.setdefault("status", {})["conditions"] = [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True" if established else "False",
             "reason": "InitialNamesAccepted" if established else "Installing",
             "message": "the initial names have been accepted" if established
             else "the initial names are being accepted", "lastTransitionTime": now},
        ]

    def _names_conflict(self, crd: JSON) -> tuple[str, str] | None:
        """(reason, message) when another CRD of the same group claims one of its names.

        The API server's naming controller does this check and reports it in the
        NamesAccepted condition; such a CRD never becomes Established.
        """
        group, names = crd["spec"]["group"], crd["spec"]["names"]
        for (key, _, other_name), other in self._store.objects.items():
            if key != CRD_KEY or other["spec"]["group"] != group:
                continue
            theirs = other["spec"]["names"]
            if theirs.get("kind") == names.get("kind"):
                return ("KindConflict", f'"{names["kind"]}" is already in use')
            shared = set(theirs.get("shortNames") or []) & set(names.get("shortNames") or [])
            if shared:
                return ("ShortNamesConflict",
                        f'"{sorted(shared)[0]}" is already in use by {other_name}')
        return None

    def _get(self, key: tuple[str, str], namespace: str, name: str) -> JSON:
        obj = self._store.objects.get((key, namespace, name))
        if obj is None:
            raise _not_found(key[1], name, key[0])
        return copy.deepcopy(obj)

    def _insert(self, key: tuple[str, str], namespace: str, obj: JSON) -> JSON:
        meta = obj.setdefault("metadata", {})
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        if namespace:
            meta["namespace"] = namespace
        self._commit(key, namespace, obj, "ADDED")
        return obj

    def _commit(self, key: tuple[str, str], namespace: str, obj: JSON, event: str) -> None:
        store = self._store
        store.revision += 1
        obj["metadata"]["resourceVersion"] = str(store.revision)
        name = obj["metadata"]["name"]
        if event == "DELETED":
            store.objects.pop((key, namespace, name), None)
        else:
            store.objects[(key, namespace, name)] = copy.deepcopy(obj)
        store.history.append(_Event(store.revision, event, key, copy.deepcopy(obj)))
        overflow = len(store.history) - self.history_limit
        if overflow > 0:
            store.compacted = store.history[overflow - 1].resource_version
            del store.history[:overflow]
        self._cond.notify_all()

    # -- operations (each takes the lock) -----------------------------------------------

    def _check_namespace(self, kind: _Kind, namespace: str) -> None:
        if kind.namespaced and (NAMESPACE_KEY, "", namespace) not in self._store.objects:
            raise _not_found("namespaces", namespace)

    def _admit(self, kind: _Kind, obj: JSON) -> JSON:
        """Prune and validate a custom resource against its CRD's schema; check a CRD."""
        if kind.schema is not None:
            meta = obj.get("metadata", {})
            obj = prune(obj, kind.schema)  # type: ignore[assignment]
            obj["metadata"] = meta
            body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
            problems = validate_schema(body, {**kind.schema, "properties": {
                k: v for k, v in kind.schema.get("properties", {}).items()
                if k not in ("apiVersion", "kind", "metadata")}})
            if problems:
                raise ApiError(422, "Invalid", f'{kind.kind} "{meta.get("name")}" is invalid: '
                               + ", ".join(problems),
                               details={"name": meta.get("name"), "group": kind.group,
                                        "kind": kind.kind,
                                        "causes": [{"message": p} for p in problems]})
        if kind.key == CRD_KEY:
            _validate_crd(obj)
        obj["apiVersion"] = kind.api_version
        obj["kind"] = kind.kind
        return obj

    def create(self, kind: _Kind, namespace: str, body: JSON) -> JSON:
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name")
        if not name:
            raise ApiError(422, "Invalid", f"{kind.kind}.{kind.group} is invalid: "
                           "metadata.name: Required value: name or generateName is required")
        if kind.namespaced and meta.get("namespace", namespace) != namespace:
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not "
                           "match the namespace sent on the request")
        for volatile in ("resourceVersion", "uid", "creationTimestamp", "generation"):
            meta.pop(volatile, None)
        with self._cond:
            self._check_namespace(kind, namespace)
            if (kind.key, namespace, name) in self._store.objects:
                qualified = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
                raise ApiError(409, "AlreadyExists", f'{qualified} "{name}" already exists',
                               details={"name": name, "group": kind.group, "kind": kind.plural})
            if kind.status_subresource:
                body.pop("status", None)
            body = self._admit(kind, body)
            if kind.key == CRD_KEY:
                conflict = self._names_conflict(body)
                self._set_established(body, self.auto_establish and conflict is None)
                if conflict is not None:
                    body["status"]["conditions"][0].update(
                        status="False", reason=conflict[0], message=conflict[1])
                    body["status"]["conditions"][1].update(
                        reason="NotAccepted", message="not all names are accepted")
                body["status"]["acceptedNames"] = body["spec"]["names"]
                body["status"]["storedVersions"] = [
                    v["name"] for v in body["spec"]["versions"] if v.get("storage")]
            return copy.deepcopy(self._insert(kind.key, namespace, body))

    def get(self, kind: _Kind, namespace: str, name: str) -> JSON:
        with self._cond:
            return self._get(kind.key, namespace, name)

    def list_objects(self, kind: _Kind, namespace: str | None, query: Mapping[str, str]) -> JSON:
        matches = _selector(query)
        with self._cond:
            items = [copy.deepcopy(o) for (k, ns, _), o in sorted(self._store.objects.items())
                     if k == kind.key and (namespace is None or ns == namespace) and matches(o)]
            revision = self._store.revision
        return {"apiVersion": kind.api_version, "kind": f"{kind.kind}List",
                "metadata": {"resourceVersion": str(revision)}, "items": items}

    def replace(self, kind: _Kind, namespace: str, name: str, body: JSON, *,
                subresource: str | None) -> JSON:
        meta = body.get("metadata") or {}
        if meta.get("name", name) != name:
            raise ApiError(400, "BadRequest", "the name of the object "
                           f"({meta.get('name')}) does not match the name on the URL ({name})")
        with self._cond:
            current = self._get(kind.key, namespace, name)
            wanted = meta.get("resourceVersion")
            if not wanted and kind.group:  # custom resources and CRDs
                raise ApiError(422, "Invalid", f'{kind.kind}.{kind.group} "{name}" is invalid: '
                               "metadata.resourceVersion: Invalid value: 0x0: must be specified "
                               "for an update")
            return self._update(kind, namespace, current, body, wanted=wanted,
                                subresource=subresource)

    def _update(self, kind: _Kind, namespace: str, current: JSON, body: JSON, *,
                wanted: str | None, subresource: str | None) -> JSON:
        name = current["metadata"]["name"]
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            qualified = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {qualified} '
                           f'"{name}": the object has been modified; please apply your '
                           "changes to the latest version and try again",
                           details={"name": name, "group": kind.group, "kind": kind.plural})
        if subresource == "status":
            updated = copy.deepcopy(current)
            updated["status"] = body.get("status")
            if updated["status"] is None:
                updated.pop("status")
        else:
            updated = copy.deepcopy(body)
            fixed = current["metadata"]
            updated["metadata"] = {**(body.get("metadata") or {}),
                                   **{k: fixed[k] for k in ("uid", "creationTimestamp",
                                                            "generation", "namespace", "name")
                                      if k in fixed}}
            if kind.status_subresource:
                if "status" in current:
                    updated["status"] = current["status"]
                else:
                    updated.pop("status", None)
        updated = self._admit(kind, updated)
        updated["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if updated == current:
            return current  # a no-op write does not bump resourceVersion
        if {k: v for k, v in updated.items() if k not in ("metadata", "status")} != {
                k: v for k, v in current.items() if k not in ("metadata", "status")}:
            updated["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        if kind.key == CRD_KEY and subresource != "status":
            self._set_established(updated, self._is_established(current))
        self._commit(kind.key, namespace, updated, "MODIFIED")
        return copy.deepcopy(updated)

    def patch(self, kind: _Kind, namespace: str, name: str, body: Any, content_type: str, *,
              subresource: str | None) -> JSON:
        with self._cond:
            current = self._get(kind.key, namespace, name)
            if content_type == "application/merge-patch+json":
                if not isinstance(body, dict):
                    raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
                patched = _merge_patch(current, body)
            elif content_type == "application/json-patch+json":
                patched = _json_patch(current, body)
            else:
                raise ApiError(415, "UnsupportedMediaType",
                               f"the body of the request was in an unknown format - accepted "
                               f"media types include: application/json-patch+json, "
                               f"application/merge-patch+json (got {content_type})")
            wanted = None
            if isinstance(body, dict):
                wanted = (body.get("metadata") or {}).get("resourceVersion")
            return self._update(kind, namespace, current, patched, wanted=wanted,
                                subresource=subresource)

    def delete(self, kind: _Kind, namespace: str, name: str, options: JSON) -> JSON:
        preconditions = options.get("preconditions") or {}
        with self._cond:
            current = self._get(kind.key, namespace, name)
            for field_name in ("resourceVersion", "uid"):
                wanted = preconditions.get(field_name)
                if wanted and wanted != current["metadata"][field_name]:
                    raise ApiError(409, "Conflict", f"Operation cannot be fulfilled on "
                                   f'{kind.plural} "{name}": Precondition failed: '
                                   f"{field_name}: {wanted}, "
                                   f"{field_name} in object meta: "
                                   f"{current['metadata'][field_name]}")
            if kind.key == CRD_KEY:
                group, plural = current["spec"]["group"], current["spec"]["names"]["plural"]
                for key in [k for k in self._store.objects if k[0] == (group, plural)]:
                    self._commit(key[0], key[1], copy.deepcopy(self._store.objects[key]),
                                 "DELETED")
            if kind.key == NAMESPACE_KEY:
                for key in [k for k in self._store.objects if k[1] == name]:
                    self._commit(key[0], key[1], copy.deepcopy(self._store.objects[key]),
                                 "DELETED")
            self._commit(kind.key, namespace, current, "DELETED")
            return current

    def watch(self, kind: _Kind, namespace: str | None,
              query: Mapping[str, str]) -> Generator[JSON, None, None]:
        """Events as the real server streams them; ends on timeoutSeconds or close.

        Bad parameters raise here, before the stream starts (a 400, not an event).
        """
        matches = _selector(query)
        deadline = time.monotonic() + float(query.get("timeoutSeconds", "1800"))
        since = query.get("resourceVersion", "")
        if since not in ("", "0") and not since.isdigit():
            raise ApiError(400, "BadRequest", f'invalid resource version "{since}"')

        def ours(key: tuple[str, str], ns: str, obj: JSON) -> bool:
            return key == kind.key and (namespace is None or ns == namespace) and matches(obj)

        watch = _Watch(kind.key, namespace, matches)
        with self._cond:
            store = self._store
            pending: list[JSON] = []
            if since in ("", "0"):
                pending = [{"type": "ADDED", "object": copy.deepcopy(o)}
                           for (k, ns, _), o in sorted(store.objects.items()) if ours(k, ns, o)]
                position = store.revision
            else:
                position = int(since)
            store.watches.append(watch)
        return self._watch_events(watch, pending, position, deadline, ours)

    def _watch_events(self, watch: _Watch, pending: list[JSON], position: int, deadline: float,
                      ours: Callable[[tuple[str, str], str, JSON], bool],
                      ) -> Generator[JSON, None, None]:
        store = self._store
        try:
            yield from pending
            while True:
                expired: int | None = None
                with self._cond:
                    while True:
                        if watch.closed or time.monotonic() >= deadline:
                            return
                        if store.compacted > position:
                            # Asked for (or fell behind into) compacted history.
                            expired = store.compacted
                            break
                        events = [e for e in store.history if e.resource_version > position]
                        if events:
                            break
                        self._cond.wait(min(0.5, max(0.0, deadline - time.monotonic())))
                    if expired is None:
                        position = events[-1].resource_version
                        ready = [{"type": e.type, "object": copy.deepcopy(e.object)}
                                 for e in events
                                 if ours(e.kind_key, e.object["metadata"].get("namespace", ""),
                                         e.object)]
                if expired is not None:
                    with self._cond:
                        store.expired_watches += 1
                    yield {"type": "ERROR", "object": ApiError(
                        410, "Expired",
                        f"too old resource version: {position} ({expired + 1})").status()}
                    return
                yield from ready
        finally:
            with self._cond:
                watch.closed = True
                store.watches.remove(watch)

    def take_lost_response(self, method: str) -> bool:
        with self._cond:
            if self._faults.lose_responses > 0 and method in self._faults.lose_methods:
                self._faults.lose_responses -= 1
                return True
            return False


def _validate_crd(crd: JSON) -> None:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    name = crd["metadata"].get("name")
    problems = []
    if not spec.get("group"):
        problems.append("spec.group: Required value")
    if not names.get("plural") or not names.get("kind"):
        problems.append("spec.names: Required value: plural and kind")
    elif name != f"{names['plural']}.{spec.get('group')}":
        problems.append(f'metadata.name: Invalid value: "{name}": must be spec.names.plural+"."+'
                        "spec.group")
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        problems.append("spec.scope: Unsupported value: supported values: Cluster, Namespaced")
    versions = spec.get("versions") or []
    if sum(1 for v in versions if v.get("storage")) != 1:
        problems.append("spec.versions: Invalid value: must have exactly one version marked "
                        "as storage version")
    for version in versions:
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        if not schema or schema.get("type") != "object":
            problems.append(f"spec.versions[{version.get('name')}].schema.openAPIV3Schema: "
                            "Required value: schemas are required and must be structural")
    if problems:
        raise ApiError(422, "Invalid", f'CustomResourceDefinition.apiextensions.k8s.io "{name}" '
                       "is invalid: " + ", ".join(problems))


def _merge_patch(target: object, patch: object) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _json_patch(target: JSON, operations: object) -> JSON:  # noqa: PLR0912 - one per op
    """RFC 6902 JSON patch: add, replace, remove and test (what clients send for CRs)."""
    if not isinstance(operations, list):
        raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
    document = copy.deepcopy(target)
    for operation in operations:
        parts = [p.replace("~1", "/").replace("~0", "~")
                 for p in operation["path"].split("/")[1:]]
        parent: Any = document
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        op = operation["op"]
        try:
            if op == "test":
                actual = parent[int(last)] if isinstance(parent, list) else parent[last]
                if actual != operation["value"]:
                    raise ApiError(422, "Invalid", f"testing value {operation['path']} failed")
            elif op == "remove":
                del parent[int(last) if isinstance(parent, list) else last]
            elif op in ("add", "replace"):
                if isinstance(parent, list):
                    index = len(parent) if last == "-" else int(last)
                    if op == "add":
                        parent.insert(index, operation["value"])
                    else:
                        parent[index] = operation["value"]
                else:
                    if op == "replace" and last not in parent:
                        raise ApiError(422, "Invalid", f"replace operation does not apply: doc "
                                       f"is missing key: {operation['path']}")
                    parent[last] = operation["value"]
            else:
                raise ApiError(400, "BadRequest", f"unsupported JSON patch operation {op!r}")
        except (KeyError, IndexError) as missing:
            raise ApiError(422, "Invalid", f"doc is missing path: {operation['path']}") from missing
    return document


# ---------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------

_CORE = re.compile(r"^/api/v1(?:/namespaces/(?P<name>[^/]+))?$")
_CORE_NAMESPACED = re.compile(
    r"^/api/v1/namespaces/(?P<namespace>[^/]+)/(?P<plural>configmaps)(?:/(?P<name>[^/]+))?$")
_GROUP = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)"
    r"(?:/namespaces/(?P<namespace>[^/]+))?/(?P<plural>[^/]+)"
    r"(?:/(?P<name>[^/]+)(?:/(?P<sub>status))?)?$")


class _Handler(http.server.BaseHTTPRequestHandler):
    fake: FakeKubeServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm and the
    # client's delayed ACK every keep-alive response would stall about 40 ms.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        with self.fake._cond:
            self.fake._connections.add(self.connection)
            refusing = self.fake._refusing
        if refusing:
            self.close_connection = True
            self.fake._turn_away(self.connection)

    def finish(self) -> None:
        with self.fake._cond:
            self.fake._connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest captures failures through the client's exceptions instead."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError as error:
            raise ApiError(400, "BadRequest", f"invalid JSON body: {error}") from None

    def _send(self, code: int, payload: JSON) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        if self.fake._refusing:
            self.close_connection = True
            self.fake._turn_away(self.connection)
            return
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        self.fake.requests.append((method, parsed.path))
        try:
            body = self._body() if method in ("POST", "PUT", "PATCH", "DELETE") else None
            if self.fake.token is not None and (
                    self.headers.get("Authorization") != f"Bearer {self.fake.token}"):
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if parsed.path in ("/version", "/healthz", "/readyz", "/livez"):
                self._send(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0-fake"})
                return
            result = self._route(method, parsed.path, query, body)
            if result is None:
                return  # a watch already streamed its answer
            code, payload = result
            if method != "GET" and self.fake.take_lost_response(method):
                # The write happened; the answer never arrives.
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(2)
                return
            self._send(code, payload)
        except ApiError as error:
            self._send(error.code, error.status())
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            self._send(400, ApiError(400, "BadRequest", f"malformed request: {error!r}").status())

    def _route(self, method: str, path: str, query: Mapping[str, str],
               body: Any) -> tuple[int, JSON] | None:
        fake = self.fake
        namespaced = _CORE_NAMESPACED.match(path)
        if namespaced:
            return self._resource(method, _BUILTIN_KINDS[("", namespaced.group("plural"))],
                                  namespaced.group("namespace"), namespaced.group("name"),
                                  sub=None, query=query, body=body)
        core = _CORE.match(path)
        if core:
            kind = _BUILTIN_KINDS[NAMESPACE_KEY]
            return self._resource(method, kind, "", core.group("name"), sub=None, query=query,
                                  body=body)
        match = _GROUP.match(path)
        if not match:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        group, version, plural = match.group("group", "version", "plural")
        if (group, plural) == CRD_KEY and version != "v1":
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        with fake._cond:
            kind = fake._kind(group, plural, version)
        namespace = match.group("namespace")
        if kind.namespaced != (namespace is not None) and (
                match.group("name") or method != "GET"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        sub = match.group("sub")
        if sub and not kind.status_subresource:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return self._resource(method, kind, namespace or "", match.group("name"), sub=sub,
                              query=query, body=body,
                              all_namespaces=kind.namespaced and namespace is None)

    def _resource(  # noqa: PLR0911 - one answer per verb
            self, method: str, kind: _Kind, namespace: str, name: str | None, *,
            sub: str | None, query: Mapping[str, str], body: Any,
            all_namespaces: bool = False) -> tuple[int, JSON] | None:
        fake = self.fake
        if name is None:
            if method == "GET" and query.get("watch") in ("true", "1"):
                self._stream(fake.watch(kind, None if all_namespaces else namespace, query))
                return None
            if method == "GET":
                return 200, fake.list_objects(kind, None if all_namespaces else namespace, query)
            if method == "POST":
                if not isinstance(body, dict):
                    raise ApiError(400, "BadRequest", "the request body must be an object")
                return 201, fake.create(kind, namespace, body)
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on a collection")
        if method == "GET":
            return 200, fake.get(kind, namespace, name)
        if method == "PUT":
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the request body must be an object")
            return 200, fake.replace(kind, namespace, name, body, subresource=sub)
        if method == "PATCH":
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            return 200, fake.patch(kind, namespace, name, body, content_type, subresource=sub)
        if method == "DELETE":
            return 200, fake.delete(kind, namespace, name, body if isinstance(body, dict) else {})
        raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed")

    def _stream(self, events: Generator[JSON, None, None]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for event in events:
                data = json.dumps(event).encode() + b"\n"
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client went away
        finally:
            events.close()


def main() -> None:
    """Serve until interrupted, without authentication; print the URL (for curl).

    kubectl needs API discovery, which the fake does not serve.
    """
    fake = FakeKubeServer(token=None).start()
    print(fake.url, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    fake.stop()


if __name__ == "__main__":
    main()
