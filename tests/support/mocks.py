"""The one Pulumi mocks module: run the real program, record what it registers.

Every unit test of a component goes through :func:`run_program`, which runs the real
``__main__.py`` for a given stack config map, exactly as ``pulumi up`` would, minus the
engine: config goes in through ``set_all_config`` and is parsed by the real
``components.config.load``; resources are recorded by :class:`Mocks`; stack outputs come
back resolved with their secretness. Each run gets a fresh event loop and a fresh root
stack, so tests are independent and order does not matter.

What the mocks do that the engine would, and nothing more:

- Kubernetes objects get ``metadata.name`` back (mocks do not auto-name; reading
  ``.metadata.name`` of an unnamed object would otherwise fail), and a namespace.
- ``RandomPassword.result`` comes back as a *secret* value of the requested length, as the
  real provider's does, so secretness propagates through the program as in a real run.
- Secret inputs arrive wrapped; they are unwrapped for assertions, and the path of each
  one is remembered in :attr:`Recorded.secret_paths` ("stringData", "spec.password"...).

:func:`manifests` turns every recorded Kubernetes object into the plain dict a
``kubectl apply`` would send (apiVersion, kind, metadata, spec...), for schema
validation and policy checks (Checkov).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import runpy
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pulumi
import pulumi.runtime
from pulumi.runtime import rpc, settings
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.rpc_manager import RPCManager
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

REPO_ROOT = Path(__file__).resolve().parents[2]
PROGRAM = REPO_ROOT / "__main__.py"
PROJECT = "mysql-cluster"
_SECRET_SIG = rpc._special_sig_key


@dataclass(frozen=True)
class Recorded:
    """One registered resource: its type token, logical name and unwrapped inputs."""

    type: str
    name: str
    inputs: dict[str, Any]
    secret_paths: frozenset[str]
    provider: str | None
    custom: bool
    urn: str = ""
    parent: str = ""
    # URNs this resource was registered as depending on (depends_on and input dependencies).
    dependencies: frozenset[str] = frozenset()

    @property
    def kind(self) -> str | None:
        kind = self.inputs.get("kind")
        return kind if isinstance(kind, str) else None

    @property
    def metadata_name(self) -> str | None:
        metadata = self.inputs.get("metadata") or {}
        name = metadata.get("name")
        return name if isinstance(name, str) else None

    def is_secret(self, path: str) -> bool:
        """Whether the input at ``path`` (or an enclosing value) arrived as a secret."""
        return any(path == p or path.startswith(p + ".") for p in self.secret_paths)


@dataclass(frozen=True)
class StackOutput:
    value: Any
    secret: bool


@dataclass
class ProgramResult:
    resources: list[Recorded]
    outputs: dict[str, StackOutput]

    def of_type(self, type_token: str) -> list[Recorded]:
        return [r for r in self.resources if r.type == type_token]

    def kubernetes(self, kind: str) -> list[Recorded]:
        return [r for r in self.resources if r.type.startswith("kubernetes:") and r.kind == kind]

    def one(self, kind: str, name: str | None = None) -> Recorded:
        """The single Kubernetes object of ``kind`` (named ``name``, if given)."""
        found = [r for r in self.kubernetes(kind) if name is None or r.metadata_name == name]
        if len(found) != 1:
            names = [r.metadata_name for r in self.kubernetes(kind)]
            raise AssertionError(f"expected one {kind} {name or ''}, found {names}")
        return found[0]

    def component(self, type_token: str) -> ProgramResult:
        """Only the component of ``type_token`` and its direct children: the view a test of
        one component needs once the program builds several."""
        (parent,) = [r for r in self.resources if r.type == type_token]
        return ProgramResult(
            resources=[r for r in self.resources if r is parent or r.parent == parent.urn],
            outputs=self.outputs)

    def by_name(self, name: str) -> Recorded:
        """The resource registered under the logical ``name``."""
        found = [r for r in self.resources if r.name == name]
        if len(found) != 1:
            raise AssertionError(f"expected one resource named {name!r}, found {len(found)}")
        return found[0]

    def index(self, resource: Recorded) -> int:
        """Registration order: a resource that depends on another registers after it."""
        return self.resources.index(resource)


def _unwrap(value: Any, path: str, secrets: set[str]) -> Any:
    if isinstance(value, dict):
        if value.get(_SECRET_SIG) == rpc._special_secret_sig:
            secrets.add(path)
            return _unwrap(value.get("value"), path, secrets)
        return {k: _unwrap(v, f"{path}.{k}" if path else k, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v, f"{path}[{i}]", secrets) for i, v in enumerate(value)]
    return value


def _secret(value: Any) -> dict[str, Any]:
    return {_SECRET_SIG: rpc._special_secret_sig, "value": value}


class _Monitor(MockMonitor):
    """The SDK's mock monitor, also keeping what only the request carries: the parent, the
    dependencies and the URN (the mocks' ``new_resource`` sees none of them)."""

    def __init__(self, mocks: Mocks) -> None:
        super().__init__(mocks)
        self.requests: dict[tuple[str, str], tuple[str, frozenset[str]]] = {}

    def RegisterResource(self, request: Any) -> Any:
        deps = set(request.dependencies)
        for property_deps in request.propertyDependencies.values():
            deps.update(property_deps.urns)
        self.requests[(request.type, request.name)] = (request.parent, frozenset(deps))
        return super().RegisterResource(request)  # type: ignore[no-untyped-call]


class Mocks(pulumi.runtime.Mocks):
    """Records every resource; answers as the engine and providers would (see module doc)."""

    def __init__(self, existing: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.resources: list[Recorded] = []
        # Objects already in the cluster, by ``<namespace>/<name>``: what a ``get`` reads.
        self.existing = dict(existing or {})
        self.reads: list[tuple[str, str]] = []  # (type, id) of every ``get``

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        if args.resource_id:
            # A ``get``: the provider reads the object, the stack never owns it.
            self.reads.append((args.typ, args.resource_id))
            if args.resource_id not in self.existing:
                raise KeyError(f"{args.typ} {args.resource_id!r} does not exist")
            return args.resource_id, dict(self.existing[args.resource_id])
        secrets: set[str] = set()
        inputs = _unwrap(args.inputs, "", secrets)
        self.resources.append(Recorded(
            type=args.typ, name=args.name, inputs=inputs, secret_paths=frozenset(secrets),
            provider=args.provider, custom=bool(args.custom)))
        outputs = dict(args.inputs)
        if args.typ.startswith("kubernetes:"):
            metadata = dict(inputs.get("metadata") or {})
            metadata.setdefault("name", args.name)
            metadata.setdefault("namespace", "default")
            outputs["metadata"] = metadata
        if args.typ == "random:index/randomPassword:RandomPassword":
            length = int(inputs.get("length", 16))
            digest = hashlib.sha256(args.name.encode()).hexdigest()
            outputs["result"] = _secret(("Pw" + digest * 4)[:length])
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        return {}, None


def config_map(stack_config: Mapping[str, Any]) -> dict[str, str]:
    """The engine's config map: object values as JSON text, scalars as text."""
    return {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in stack_config.items()
    }


def load_stack_file(stack: str) -> dict[str, Any]:
    """The ``config:`` map of ``Pulumi.<stack>.yaml``."""
    # PyYAML comes with pulumi (no type stubs in the venv): imported as a plain module.
    yaml: Any = importlib.import_module("yaml")
    text = (REPO_ROOT / f"Pulumi.{stack}.yaml").read_text(encoding="utf-8")
    loaded = yaml.safe_load(text) or {}
    config = loaded.get("config") or {}
    assert isinstance(config, dict), f"Pulumi.{stack}.yaml: config must be a mapping"
    return config


def stack_with(stack: str, **mysql: Any) -> dict[str, Any]:
    """``Pulumi.<stack>.yaml``'s config with keys of the ``mysql`` object replaced."""
    config = load_stack_file(stack)
    config["mysql-cluster:mysql"] = {**config["mysql-cluster:mysql"], **mysql}
    return config


def _run_main() -> None:
    runpy.run_path(str(PROGRAM), run_name="__main__")


def run_program(stack_config: Mapping[str, Any], *, stack: str = "dev",
                project: str = PROJECT,
                program: Callable[[], None] = _run_main,
                existing: Mapping[str, Mapping[str, Any]] | None = None) -> ProgramResult:
    """Run ``__main__.py`` (or ``program``) under mocks with ``stack_config``
    (``{"mysql-cluster:key": value}``); ``existing`` are the objects a ``get`` finds, by
    ``<namespace>/<name>`` (their outputs, as the provider would read them).

    Exceptions from the program (a ConfigError, say) propagate; ``last_mocks`` then
    still holds what was registered before it, which tests use to prove nothing was.
    """
    global last_mocks  # noqa: PLW0603 (lets a test inspect a run that raised)
    # Restored afterwards: code that runs later in the same process (other tests' own
    # set_mocks, pytest plugins) expects the loop it had.
    previous = _current_loop()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        mocks = Mocks(existing)
        monitor = _Monitor(mocks)
        last_mocks = mocks
        settings.ROOT.set(None)
        pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False,
                                 monitor=monitor)
        pulumi.runtime.set_all_config(config_map(stack_config))
        _sync_await(run_pulumi_func(program))
        root = settings.get_root_resource()
        raw_outputs: dict[str, Any] = dict(getattr(root, "outputs", {}) or {})
        outputs = {name: _resolve(value) for name, value in raw_outputs.items()}
        urns = {(urn.split("::")[-2].split("$")[-1], urn.split("::")[-1]): urn
                for urn in monitor.resources}
        resources = []
        for recorded in mocks.resources:
            parent, deps = monitor.requests.get((recorded.type, recorded.name), ("", frozenset()))
            resources.append(replace(recorded, parent=parent, dependencies=deps,
                                     urn=urns.get((recorded.type, recorded.name), "")))
        return ProgramResult(resources=resources, outputs=outputs)
    finally:
        settings.ROOT.set(None)
        # A program that failed mid-registration leaves RPCs and outputs pending on this
        # loop; the next run must not await them once the loop is closed.
        settings.SETTINGS.rpc_manager = RPCManager()  # type: ignore[no-untyped-call]
        settings.SETTINGS.outputs.clear()
        loop.close()
        asyncio.set_event_loop(previous if previous and not previous.is_closed()
                               else asyncio.new_event_loop())


def _current_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_event_loop()
    except RuntimeError:
        return None


def run_stack(stack: str, **overrides: Any) -> ProgramResult:
    """Run the program with ``Pulumi.<stack>.yaml`` (top-level keys replaced by overrides,
    spelled without the project prefix)."""
    config = load_stack_file(stack)
    config.update({f"{PROJECT}:{key}": value for key, value in overrides.items()})
    return run_program(config, stack=stack)


def _resolve(value: Any) -> StackOutput:
    output = pulumi.Output.from_input(value)
    resolved = _sync_await(output.future())
    secret = bool(_sync_await(output.is_secret()))
    return StackOutput(value=resolved, secret=secret)


last_mocks: Mocks | None = None


def failed_deploy(deploy: str, argument: Any, namespace: str) -> tuple[str, list[str]]:
    """The error of ``deploy`` (``"module:function"``, called with ``argument`` as JSON, a
    run_program expected to raise) and every ``mysql*`` Kubernetes object of ``namespace`` it
    registered before failing (``Kind/name``).

    One failure makes every resource waiting on a check fail too; the SDK's chained errors,
    finalized later, leave CPython 3.11's compiler in a state that breaks the next module
    import (SystemError: AST constructor recursion depth mismatch), so such a run gets a
    process of its own.
    """
    child = subprocess.run([sys.executable, "-c", _FAILED_DEPLOY, deploy, json.dumps(argument),
                            namespace], capture_output=True, text=True, check=True,
                           timeout=120, cwd=REPO_ROOT)
    result = json.loads(child.stdout.splitlines()[-1])
    return result["error"], result["built"]


_FAILED_DEPLOY = """
import importlib, json, sys
from tests.support import mocks
module, function = sys.argv[1].split(":")
namespace = sys.argv[3]
try:
    getattr(importlib.import_module(module), function)(json.loads(sys.argv[2]))
    error = ""
except ValueError as raised:
    error = str(raised)
built = [f"{r.kind}/{r.metadata_name}" for r in mocks.last_mocks.resources
         if r.type.startswith("kubernetes:")
         and (r.inputs.get("metadata") or {}).get("namespace") == namespace
         and (r.inputs.get("metadata") or {}).get("name", "").startswith("mysql")]
print(json.dumps({"error": error, "built": built}))
"""


def manifests(result: ProgramResult) -> list[dict[str, Any]]:
    """Every Kubernetes object the program creates, as the plain manifest ``kubectl`` sends."""
    objects = []
    for resource in result.resources:
        if not resource.type.startswith("kubernetes:") or resource.kind is None:
            continue
        objects.append(_prune(resource.inputs))
    return objects


def _prune(value: Any) -> Any:
    # The SDK leaves unset optional fields as None; a manifest simply omits them.
    if isinstance(value, dict):
        return {k: _prune(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value
