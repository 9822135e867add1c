"""probe.sh stopped at any instant leaves no option-file temp behind (it holds a password).

The probe rewrites ``$RUN_DIR/monitor-client.cnf`` on every run through a temp file and a
rename. It is run unmodified under a DEBUG trap that stops it at a chosen step (the same
technique as the clone kill test): a catchable signal at any step must leave no temp file,
and a SIGKILL's leftover must be removed by a later probe once it is older than any probe
lives, while a temp file a running probe is writing right now is left alone. No server is
needed: every step that touches the file runs before the first connection, which fails
against a closed port.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.mysql.flavor import FLAVORS
from tests.support.pod_scripts import SCRIPTS
from tests.support.procs import free_port

TEMP_GLOB = "monitor-client.cnf.??????"
# Each step is one simple command of the probe's own shell (subshells are not counted, so a
# number names one instant); the trap runs just before it, so stopping at step N leaves exactly
# what steps 1..N-1 did.
_STOP_AT_STEP = ("__stop_at=$1; __signal=$2; __step=0; __pid=$$; "
                 "trap '[[ $BASHPID != \"$__pid\" ]] || ((++__step != __stop_at)) "
                 "|| kill -\"$__signal\" \"$__pid\"' DEBUG; "
                 'source "$0" startup')
_TRACE_STEPS = ("__trace=$1; __step=0; __pid=$$; "
                """trap '[[ $BASHPID != "$__pid" ]] || """
                """printf "%d %s\\n" "$((++__step))" "$BASH_COMMAND" >>"$__trace"' DEBUG; """
                'source "$0" startup')


@dataclass
class Probe:
    run_dir: Path
    env: dict[str, str]

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        bash = shutil.which("bash")
        assert bash is not None
        return subprocess.run([bash, "-T", *argv], env=self.env, capture_output=True,
                              text=True, check=False, timeout=60)

    def stopped_at(self, step: int, signal_name: str) -> subprocess.CompletedProcess[str]:
        return self.run("-c", _STOP_AT_STEP, str(SCRIPTS / "probe.sh"), str(step), signal_name)

    def steps(self, trace: Path) -> dict[int, str]:
        """Each step's number and command."""
        self.run("-c", _TRACE_STEPS, str(SCRIPTS / "probe.sh"), str(trace))
        numbered = (line.partition(" ") for line in trace.read_text().splitlines())
        # A multi-line command continues on lines of its own, without a number.
        return {int(number): command for number, _, command in numbered if number.isdigit()}

    def rename_step(self, trace: Path) -> int:
        """The step of the option file's rename, after its mktemp."""
        steps = self.steps(trace)
        rename = next(n for n, command in sorted(steps.items())
                      if command.startswith('mv -f "$tmp"'))
        assert any("mktemp" in command for n, command in steps.items() if n < rename), steps
        return rename

    def temps(self) -> list[Path]:
        return sorted(self.run_dir.glob(TEMP_GLOB))


@pytest.fixture
def probe(tmp_path: Path) -> Probe:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "monitor-password").write_text("m-password\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    client = shutil.which("mariadb")
    if client is None:
        pytest.fail("the mariadb client is not installed (Debian's mariadb-client)")
    return Probe(run_dir, {
        **FLAVORS["mariadb"].pod_environment(),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MYSQL_FLAVOR": "mariadb",
        "CONFIG_DIR": str(SCRIPTS), "POD_NAME": "orders-mysql-0", "RUN_DIR": str(run_dir),
        "MYSQL_PORT": str(free_port()), "MONITOR_USER": "monitor",
        "MONITOR_PASSWORD_FILE": str(secrets / "monitor-password"),
    })


def test_a_signal_at_any_step_leaves_no_temp_file(probe: Probe, tmp_path: Path) -> None:
    rename = probe.rename_step(tmp_path / "steps")
    assert probe.temps() == []
    for signal_name in ("TERM", "INT", "HUP"):
        # Every step up to the rename and a few after: the window where the temp exists.
        for step in range(1, rename + 3):
            result = probe.stopped_at(step, signal_name)
            assert result.returncode != 0, (signal_name, step)
            assert probe.temps() == [], (signal_name, step)


def test_a_killed_probes_temp_file_is_removed_once_no_probe_can_own_it(
        probe: Probe, tmp_path: Path) -> None:
    rename = probe.rename_step(tmp_path / "steps")
    probe.stopped_at(rename, "KILL")  # killed just before the rename: the temp stays
    (leftover,) = probe.temps()
    # Older than any probe lives (the kubelet gives it 5 s) ...
    old = time.time() - 180
    os.utime(leftover, (old, old))
    # ... unlike the temp file of a probe that is writing right now.
    in_flight = probe.run_dir / "monitor-client.cnf.AbC123"
    in_flight.write_text("")
    probe.run("-c", 'source "$0" startup', str(SCRIPTS / "probe.sh"))
    assert probe.temps() == [in_flight]
