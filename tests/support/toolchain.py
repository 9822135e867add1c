"""Run real programs with the Pulumi CLI built from tools/pulumi: isolated and offline.

Why the Automation API: the Python language host cannot be built here (the module proxy
serves no version of ``pulumi-language-python``), so a program runs as an inline program:
this test process serves the language runtime and the CLI is started with ``--client``.
The program file itself still runs unmodified, as ``__main__`` (``runpy``), from a project
directory of its own, which is also where the engine starts the dynamic-provider process.

Isolation: ``PULUMI_HOME`` is a temporary directory (an empty plugin cache, none of the
user's credentials), the state is a file backend in another one (``pulumi login file://``)
and the passphrase is random, so nothing a test does can touch a real stack.

Offline, proven rather than assumed: every HTTP client involved (the CLI's plugin
downloads and update check, the providers, Python) honours ``HTTP(S)_PROXY``. Both point
at a loopback listener that records each connection and answers nothing; ``NO_PROXY``
exempts loopback, where the engine's gRPC and the tests' own servers live. A test that
asserts the listener saw no connection therefore proves that no run reached the network.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pulumi import automation as auto

from scripts.pulumi_inline import inline_stack
from tests.support.procs import LOCALHOST
from tests.support.tools import bin_dir, tool

PROGRAMS_DIR = Path(__file__).resolve().parents[1] / "e2e" / "programs"
REPO_ROOT = Path(__file__).resolve().parents[2]
# What the real project directory lends a test's: the program, the packages it imports
# (the dynamic-provider process imports them from its working directory) and the venv
# Pulumi.yaml names.
PROJECT_LINKS = ("__main__.py", "components", "distlock", "venv")

# Everything tools/pulumi/build.sh puts into its bin directory; the engine finds the
# plugins and the dynamic-provider script on PATH, before any plugin cache.
TOOLCHAIN = ("pulumi", "pulumi-resource-kubernetes", "pulumi-resource-pulumi-python",
             "pulumi-language-python-exec")


def toolchain_bin() -> Path:
    """The directory holding the built toolchain; skips (fails under CI=true) without it."""
    directories = {tool(name).parent for name in TOOLCHAIN}
    assert directories == {bin_dir()}, directories
    return bin_dir()


class NetworkTrap:
    """A loopback listener standing in for every HTTP(S) proxy; it records who connects.

    It accepts and closes each connection at once, so a client that tries the network
    fails fast instead of hanging, and the attempt is on record.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server((LOCALHOST, 0))
        self.port = int(self._listener.getsockname()[1])
        self.connections: list[tuple[str, int]] = []
        self._thread = threading.Thread(target=self._serve, name="network-trap", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                connection, peer = self._listener.accept()
            except OSError:  # shut down by close(): the trap is done
                return
            self.connections.append(peer)
            connection.close()

    def close(self) -> None:
        # close() alone does not wake a thread blocked in accept() on Linux; shutdown() does.
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join()


@dataclass
class RunLog:
    """What one Automation API operation printed and every diagnostic the engine sent."""

    output: list[str] = field(default_factory=list)
    diagnostics: list[tuple[str, str, str]] = field(default_factory=list)  # severity, urn, text
    steps: list[tuple[str, str]] = field(default_factory=list)  # operation, urn (done ones)

    def on_output(self, line: str) -> None:
        self.output.append(line)

    def on_event(self, event: auto.EngineEvent) -> None:
        diagnostic = event.diagnostic_event
        if diagnostic is not None:
            self.diagnostics.append((diagnostic.severity, diagnostic.urn or "",
                                     diagnostic.message))
        done = event.res_outputs_event
        if done is not None:
            self.steps.append((str(getattr(done.metadata.op, "value", done.metadata.op)),
                               done.metadata.urn))

    def changed(self) -> list[str]:
        """URNs of every step that was not ``same``, as ``op urn``."""
        return [f"{op} {urn}" for op, urn in self.steps if op != "same"]

    def text(self) -> str:
        return "\n".join(self.output)


@dataclass
class PulumiSandbox:
    """A Pulumi home, a file backend and a passphrase of its own, with the built CLI."""

    root: Path
    bin_dir: Path
    trap: NetworkTrap
    passphrase: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @property
    def home(self) -> Path:
        return self.root / "pulumi-home"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def backend_url(self) -> str:
        return f"file://{self.state_dir}"

    def environment(self) -> dict[str, str]:
        python_bin = str(Path(sys.executable).parent)
        return {
            "PULUMI_HOME": str(self.home),
            "PULUMI_CONFIG_PASSPHRASE": self.passphrase,
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            # The plugins and this interpreter's venv (pulumi-resource-pulumi-python runs
            # `python3 -m pulumi.dynamic`, which must import this venv's pulumi).
            "PATH": os.pathsep.join([str(self.bin_dir), python_bin, os.environ["PATH"]]),
            "PULUMI_PYTHON_CMD": sys.executable,
            "HTTP_PROXY": self.trap.url,
            "HTTPS_PROXY": self.trap.url,
            "http_proxy": self.trap.url,
            "https_proxy": self.trap.url,
            "NO_PROXY": f"{LOCALHOST},localhost",
            "no_proxy": f"{LOCALHOST},localhost",
        }

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the built CLI with this sandbox's environment; fail with its output."""
        result = subprocess.run([str(self.bin_dir / "pulumi"), *args], capture_output=True,
                                text=True, check=False, timeout=120,
                                env={**os.environ, **self.environment()})
        if result.returncode != 0:
            raise AssertionError(f"pulumi {' '.join(args)} exited {result.returncode}\n"
                                 f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result

    def command(self) -> auto.PulumiCommand:
        return auto.PulumiCommand(root=str(self.bin_dir.parent))

    def login(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.cli("login", self.backend_url)

    def new_stack(self, program: str, stack: str,
                  config: Mapping[str, auto.ConfigValue]) -> auto.Stack:
        """``pulumi stack init`` of tests/e2e/programs/<program>.py in a project dir of its own."""
        project_dir = self.root / program
        project_dir.mkdir()
        main = project_dir / "__main__.py"
        shutil.copyfile(PROGRAMS_DIR / f"{program}.py", main)

        def run_program() -> None:
            runpy.run_path(str(main), run_name="__main__")

        project = program.replace("_", "-")
        workspace = auto.LocalWorkspaceOptions(
            work_dir=str(project_dir),
            pulumi_home=str(self.home),
            pulumi_command=self.command(),
            project_settings=auto.ProjectSettings(name=project, runtime="python"),
        )
        created = auto.create_stack(stack, project_name=project, program=run_program,
                                    opts=workspace)
        created.set_all_config(dict(config))
        return created

    def project_stack(self, stack: str, *, stack_file: str = "e2e",
                      config: Mapping[str, auto.ConfigValue] | None = None) -> auto.Stack:
        """``pulumi stack init`` of the real project with ``Pulumi.<stack_file>.yaml``.

        The project directory is a temporary one holding the repository's program, packages
        and venv as symlinks (so the program and the code the dynamic-provider process
        imports are the repository's, unchanged) and copies of ``Pulumi.yaml`` and the stack
        file, because ``stack init`` and ``set_config`` write into the stack file."""
        project_dir = self.root / f"project-{stack}"
        project_dir.mkdir()
        for entry in PROJECT_LINKS:
            (project_dir / entry).symlink_to(REPO_ROOT / entry)
        shutil.copyfile(REPO_ROOT / "Pulumi.yaml", project_dir / "Pulumi.yaml")
        shutil.copyfile(REPO_ROOT / f"Pulumi.{stack_file}.yaml",
                        project_dir / f"Pulumi.{stack}.yaml")
        created = inline_stack(project_dir, stack, pulumi_home=self.home,
                               pulumi_command=self.command(), create=auto.create_stack)
        if config:
            created.set_all_config(dict(config))
        return created

    def state_files(self) -> Iterator[Path]:
        return (path for path in self.state_dir.rglob("*") if path.is_file())


def _cli_children() -> list[int]:
    """PIDs of the ``pulumi`` CLI processes this test process started (the Automation API
    starts them with subprocess, so they are its direct children), then their plugins."""
    me = os.getpid()
    found = []
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The comm field is in parentheses and may hold spaces: split after its end.
            stat = (entry / "stat").read_text()
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue  # gone meanwhile
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        parents[int(entry.name)] = parent
        if parent == me and comm == "pulumi":
            found.append(int(entry.name))
    # With them their plugins and the plugins' children (two levels: the python plugin
    # is a shell script that starts Python), which a killed CLI leaves running.
    for _level in range(2):
        found += [pid for pid, parent in parents.items() if parent in found and pid not in found]
    return found


class CliDeadline:
    """Kill, by PID, the CLI run an Automation API call started if it outlives ``seconds``.

    Why: the Automation API has no timeout and pulumi-kubernetes' await on a StatefulSet
    that kwok never reports converged waits 10-30 min (issue 12); a run past its deadline
    must fail the test, not hang CI. The test that tripped it reads ``expired``."""

    def __init__(self, seconds: float, what: str) -> None:
        self.what = what
        self.seconds = seconds
        self.expired = False
        self._timer = threading.Timer(seconds, self._kill)
        self._timer.daemon = True

    def _kill(self) -> None:
        self.expired = True
        for pid in _cli_children():
            with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> CliDeadline:
        self._timer.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._timer.cancel()

    def message(self) -> str:
        return f"{self.what} outlived its {self.seconds:.0f} s deadline; its CLI was killed"
