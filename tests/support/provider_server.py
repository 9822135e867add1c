"""Drive a pulumi.dynamic provider through the real provider server, as `pulumi up` does.

There is no Pulumi CLI here, but the process the CLI starts for dynamic providers is
plain Python: ``python -m pulumi.dynamic``, a gRPC ResourceProvider server that prints
its port on its first stdout line. :class:`ProviderServer` starts exactly that process
(cwd = repository root, ``PULUMI_PROJECT`` set, as the engine does) and speaks the same
RPCs with properties serialized the same way, so what passes here passes under the CLI:
the provider object is dill-pickled into ``__provider`` and unpickled in another
process, numbers cross as floats, exceptions come back as gRPC errors, and secrets are
stripped before the call (the server declares ``acceptSecrets: False``).

:class:`ResourceDriver` adds the engine's bookkeeping for one resource (the state it
keeps between runs and the order of calls for up, preview, refresh and destroy), and
the engine's secret handling: outputs named like a secret input, or listed in
``additional_secret_outputs``, are secret in state.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from pulumi.dynamic import ResourceProvider
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import proto, rpc
from pulumi.runtime.proto import provider_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
PROVIDER_KEY = "__provider"
UNKNOWN = rpc.UNKNOWN


class ProviderError(RuntimeError):
    """The provider raised: ``details`` carries the traceback the server sent back."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        self.method = method
        self.code = code
        self.details = details
        super().__init__(f"{method} failed ({code.name}):\n{details}")


@dataclass(frozen=True)
class CheckFailure:
    property: str
    reason: str


@dataclass(frozen=True)
class CheckResult:
    inputs: dict[str, Any]
    failures: tuple[CheckFailure, ...]


@dataclass(frozen=True)
class DiffResult:
    changes: bool | None  # None: the provider could not tell (DIFF_UNKNOWN)
    replaces: tuple[str, ...]
    delete_before_replace: bool


def _serialize(props: Mapping[str, Any]) -> Any:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(rpc.serialize_properties(dict(props), {}))
    finally:
        loop.close()


def _deserialize(struct: Any) -> dict[str, Any]:
    result = rpc.deserialize_properties(struct)
    return dict(result) if result else {}


class ProviderServer:
    """One ``python -m pulumi.dynamic`` process and a gRPC stub to it."""

    def __init__(self, *, cwd: Path = REPO_ROOT, env: Mapping[str, str] | None = None,
                 project: str = "mysql-cluster", log_path: Path | None = None) -> None:
        self.log_path = log_path
        stderr = log_path.open("ab") if log_path else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pulumi.dynamic"],
                cwd=cwd, stdout=subprocess.PIPE, stderr=stderr,
                env={**os.environ, "PULUMI_PROJECT": project, **(env or {})},
                start_new_session=True,
            )
        finally:
            if log_path:
                stderr.close()  # type: ignore[union-attr]
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode().strip()
        if not line.isdigit():
            self.process.kill()
            self.process.wait()
            raise RuntimeError(f"provider server did not print a port (got {line!r})")
        self.port = int(line)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.stub = provider_pb2_grpc.ResourceProviderStub(self.channel)

    @property
    def pid(self) -> int:
        return self.process.pid

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self.stub, method)(request, timeout=600)
        except grpc.RpcError as error:
            raise ProviderError(method, error.code(), error.details() or "") from None

    def configure(self, config: Mapping[str, Any] | None = None) -> None:
        """The engine calls Configure once per process before any resource operation."""
        self._call("Configure", proto.ConfigureRequest(args=_serialize(config or {}),
                                                       acceptSecrets=True))

    def check(self, urn: str, olds: Mapping[str, Any], news: Mapping[str, Any]) -> CheckResult:
        response = self._call("Check", proto.CheckRequest(urn=urn, olds=_serialize(olds),
                                                          news=_serialize(news)))
        failures = tuple(CheckFailure(f.property, f.reason) for f in response.failures)
        return CheckResult(_deserialize(response.inputs), failures)

    def create(self, urn: str, inputs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        response = self._call("Create", proto.CreateRequest(urn=urn, properties=_serialize(inputs)))
        return response.id, _deserialize(response.properties)

    def diff(self, urn: str, resource_id: str, olds: Mapping[str, Any],
             news: Mapping[str, Any]) -> DiffResult:
        response = self._call("Diff", proto.DiffRequest(urn=urn, id=resource_id,
                                                        olds=_serialize(olds),
                                                        news=_serialize(news)))
        changes = {proto.DiffResponse.DIFF_SOME: True,
                   proto.DiffResponse.DIFF_NONE: False}.get(response.changes)
        return DiffResult(changes, tuple(response.replaces), bool(response.deleteBeforeReplace))

    def update(self, urn: str, resource_id: str, olds: Mapping[str, Any],
               news: Mapping[str, Any]) -> dict[str, Any]:
        response = self._call("Update", proto.UpdateRequest(urn=urn, id=resource_id,
                                                            olds=_serialize(olds),
                                                            news=_serialize(news)))
        return _deserialize(response.properties)

    def read(self, urn: str, resource_id: str, properties: Mapping[str, Any],
             inputs: Mapping[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
        response = self._call("Read", proto.ReadRequest(urn=urn, id=resource_id,
                                                        properties=_serialize(properties),
                                                        inputs=_serialize(inputs)))
        new_inputs = _deserialize(response.inputs) if response.HasField("inputs") else None
        return response.id, _deserialize(response.properties), new_inputs

    def delete(self, urn: str, resource_id: str, properties: Mapping[str, Any]) -> None:
        self._call("Delete", proto.DeleteRequest(urn=urn, id=resource_id,
                                                 properties=_serialize(properties)))

    def close(self) -> None:
        self.channel.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()

    def __enter__(self) -> ProviderServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass
class ResourceState:
    """What the engine keeps for one resource between runs."""

    id: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    secret_outputs: frozenset[str]


@dataclass
class UpResult:
    operation: str  # "create", "update" or "same"
    outputs: dict[str, Any]
    diff: DiffResult | None = None


@dataclass
class ResourceDriver:
    """The engine's side of one dynamic resource: up, preview, refresh, destroy.

    ``secret_inputs`` are the input names the program passed as secrets; the engine
    strips them to plaintext for the provider (acceptSecrets is false) and marks
    outputs with those names, and ``additional_secret_outputs``, secret in state.
    """

    server: ProviderServer
    provider: ResourceProvider
    type_name: str = "pulumi-python:dynamic:Resource"
    name: str = "test"
    secret_inputs: frozenset[str] = frozenset()
    additional_secret_outputs: frozenset[str] = frozenset()
    state: ResourceState | None = None
    calls: list[str] = field(default_factory=list)

    @property
    def urn(self) -> str:
        return f"urn:pulumi:test::mysql-cluster::{self.type_name}::{self.name}"

    def _with_provider(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return {**inputs, PROVIDER_KEY: serialize_provider(self.provider)}

    def check(self, inputs: Mapping[str, Any]) -> CheckResult:
        self.calls.append("check")
        olds = self.state.inputs if self.state else {}
        return self.server.check(self.urn, olds, self._with_provider(inputs))

    def _checked(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        result = self.check(inputs)
        if result.failures:
            reasons = "; ".join(f"{f.property}: {f.reason}" for f in result.failures)
            raise CheckFailedError(result.failures, reasons)
        return result.inputs

    def preview(self, inputs: Mapping[str, Any]) -> DiffResult | None:
        """Check and Diff only: Create/Update are never called in preview."""
        checked = self._checked(inputs)
        if self.state is None:
            return None
        self.calls.append("diff")
        return self.server.diff(self.urn, self.state.id, self.state.outputs, checked)

    def up(self, inputs: Mapping[str, Any]) -> UpResult:
        checked = self._checked(inputs)
        if self.state is None:
            self.calls.append("create")
            resource_id, outputs = self.server.create(self.urn, checked)
            self._store(resource_id, checked, outputs)
            return UpResult("create", outputs)
        self.calls.append("diff")
        diff = self.server.diff(self.urn, self.state.id, self.state.outputs, checked)
        if diff.changes is False:
            self.state.inputs = checked
            return UpResult("same", self.state.outputs, diff)
        if diff.replaces:
            self.destroy()
            self.calls.append("create")
            resource_id, outputs = self.server.create(self.urn, checked)
            self._store(resource_id, checked, outputs)
            return UpResult("replace", outputs, diff)
        self.calls.append("update")
        outputs = self.server.update(self.urn, self.state.id, self.state.outputs, checked)
        self._store(self.state.id, checked, outputs)
        return UpResult("update", outputs, diff)

    def refresh(self) -> dict[str, Any]:
        assert self.state is not None, "refresh needs a created resource"
        self.calls.append("read")
        resource_id, outputs, new_inputs = self.server.read(self.urn, self.state.id,
                                                             self.state.outputs, self.state.inputs)
        self._store(resource_id, new_inputs if new_inputs is not None else self.state.inputs,
                    outputs)
        return outputs

    def destroy(self) -> None:
        assert self.state is not None, "destroy needs a created resource"
        self.calls.append("delete")
        self.server.delete(self.urn, self.state.id, self.state.outputs)
        self.state = None

    def _store(self, resource_id: str, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        secret = (self.secret_inputs | self.additional_secret_outputs) & set(outputs)
        self.state = ResourceState(resource_id, inputs, outputs,
                                   frozenset(secret | {PROVIDER_KEY}))

    def plaintext_state(self) -> dict[str, Any]:
        """The outputs as they would be stored unencrypted: secret ones masked."""
        assert self.state is not None
        return {k: ("[secret]" if k in self.state.secret_outputs else v)
                for k, v in self.state.outputs.items()}

    def assert_no_plaintext(self, secrets: Iterable[str]) -> None:
        """No secret value appears anywhere in the unencrypted part of the state."""
        text = repr(self.plaintext_state())
        leaked = [s for s in secrets if s and s in text]
        assert not leaked, f"secret values stored in plaintext state: {len(leaked)} found"


class CheckFailedError(AssertionError):
    def __init__(self, failures: tuple[CheckFailure, ...], message: str) -> None:
        self.failures = failures
        super().__init__(message)
