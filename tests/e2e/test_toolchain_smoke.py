"""Smoke test of the toolchain tools/pulumi/build.sh builds (issue 12).

With the CLI built here, a file backend and nothing downloaded, it proves:
- ``pulumi stack init``, ``pulumi preview`` and ``pulumi up --yes`` of a program whose
  resource is a ``pulumi.dynamic`` provider: the engine starts the built
  ``pulumi-resource-pulumi-python``, which serves the provider from a process of its own;
- the stack's secret config stays encrypted in the state;
- ``pulumi preview`` of a Kubernetes ConfigMap loads the built
  ``pulumi-resource-kubernetes`` (the only one there is: the plugin cache is empty and no
  download can happen), against a kubeconfig whose API server refuses connections.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import textwrap
from collections.abc import Iterator, Mapping

import pytest
from pulumi import automation as auto

from tests.support.procs import LOCALHOST
from tests.support.toolchain import PulumiSandbox, RunLog

pytestmark = pytest.mark.e2e


def changes(summary: Mapping[auto.OpType, int] | Mapping[str, int] | None) -> dict[str, int]:
    """A change summary keyed by plain operation names (the SDK mixes enums and strings)."""
    return {getattr(op, "value", op): count for op, count in (summary or {}).items()}


def test_dynamic_provider_program_inits_previews_and_ups(sandbox: PulumiSandbox) -> None:
    token = secrets.token_hex(16)
    stack = sandbox.new_stack("dynamic_program", "smoke",
                              {"token": auto.ConfigValue(token, secret=True)})

    preview_log = RunLog()
    preview = stack.preview(on_output=preview_log.on_output, on_event=preview_log.on_event)
    assert changes(preview.change_summary) == {"create": 2}, preview_log.text()

    up_log = RunLog()
    up = stack.up(on_output=up_log.on_output, on_event=up_log.on_event)
    assert up.summary.result == "succeeded", up_log.text()
    assert changes(up.summary.resource_changes) == {"create": 2}, up_log.text()
    assert up.outputs["greeting"].value == "hello e2e"
    provider_pid = int(up.outputs["provider_pid"].value)
    assert provider_pid not in (0, os.getpid()), "the provider ran in the program's process"

    state = [path for path in sandbox.state_files() if path.suffix == ".json"]
    assert state, f"no stack state under {sandbox.state_dir}"
    for path in state:
        assert token not in path.read_text(errors="replace"), f"plaintext secret in {path}"

    again = stack.up()
    assert changes(again.summary.resource_changes) == {"same": 2}
    assert sandbox.trap.connections == [], "a run tried to reach the network"


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that is bound but never listens: every connection is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        yield int(sock.getsockname()[1])


def unreachable_kubeconfig(port: int) -> str:
    return textwrap.dedent(f"""\
        apiVersion: v1
        kind: Config
        clusters:
          - name: unreachable
            cluster:
              server: https://{LOCALHOST}:{port}
              insecure-skip-tls-verify: true
        users:
          - name: nobody
            user:
              token: {secrets.token_hex(16)}
        contexts:
          - name: unreachable
            context: {{cluster: unreachable, user: nobody}}
        current-context: unreachable
        """)


def test_kubernetes_plugin_loads_from_the_build(sandbox: PulumiSandbox) -> None:
    with refused_port() as port:
        stack = sandbox.new_stack(
            "configmap_program", "smoke",
            {"kubeconfig": auto.ConfigValue(unreachable_kubeconfig(port), secret=True)})
        log = RunLog()
        preview = stack.preview(on_output=log.on_output, on_event=log.on_event)

    assert changes(preview.change_summary) == {"create": 3}, log.text()
    assert sandbox.trap.connections == [], "a run tried to reach the network"
    # The engine names the plugin it started: the build's, from PATH. (Against a server
    # that refuses connections, provider 4.25.0 plans the create without a word: a
    # ConfigMap's preview needs nothing from the cluster.)
    texts = [text for _, _, text in log.diagnostics]
    built = sandbox.bin_dir / "pulumi-resource-kubernetes"
    assert any(f"using pulumi-resource-kubernetes from $PATH at {built}" in text
               for text in texts), log.text()
    # SDK and provider agree: the engine warns when the SDK asks for another version.
    assert not any("is expected to have version" in text for text in texts), log.text()
    plugins = sandbox.home / "plugins"
    assert not plugins.exists() or not any(plugins.iterdir()), "a plugin was installed"
