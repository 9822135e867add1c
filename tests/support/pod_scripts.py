"""Run the pod scripts' shell functions in a real bash, as the unit tests do.

lib.sh (and probe.sh) decide everything flavor-specific in functions that only print, so
a test sources them with the environment a pod would have and compares what they print.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from components.mysql.flavor import FLAVORS

SCRIPTS = Path(__file__).resolve().parents[2] / "components" / "mysql" / "scripts"


def _pod_environment(flavor: str) -> dict[str, str]:
    """What a pod of ``flavor`` gets besides MYSQL_FLAVOR; nothing for a flavor that is
    none (the scripts must refuse it themselves)."""
    spec = next((s for name, s in FLAVORS.items() if name == flavor), None)
    return spec.pod_environment() if spec else {}


def bash(snippet: str, *, flavor: str = "mysql", env: dict[str, str] | None = None,
         source: str = "lib.sh", prefix: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """Source ``source`` from the scripts dir in strict mode, then run ``snippet``.

    ``prefix`` goes before bash on the command line (e.g. setpriv to run as another user).
    """
    bash_path = shutil.which("bash")
    assert bash_path is not None
    # The environment a pod of ``flavor`` gets from the component (flavor.py).
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MYSQL_FLAVOR": flavor,
                **_pod_environment(flavor),
                "CONFIG_DIR": str(SCRIPTS), **(env or {})}
    script = f'set -euo pipefail; source "$CONFIG_DIR/{source}"\n{snippet}'
    return subprocess.run([*prefix, bash_path, "-c", script], env=full_env, capture_output=True,
                          text=True, check=False, timeout=30)


def output(snippet: str, **kwargs: object) -> str:
    result = bash(snippet, **kwargs)  # type: ignore[arg-type]
    assert result.returncode == 0, result.stderr
    return result.stdout


def argv(function: str, *args: str, env: dict[str, str] | None = None) -> list[str]:
    """The command a lib.sh *_command function builds, one argument per line."""
    quoted = " ".join(f"'{arg}'" for arg in args)
    text = output(f"declare -a cmd; {function} cmd {quoted}; printf '%s\\n' \"${{cmd[@]}}\"",
                  env=env)
    return text.splitlines()
