"""Program: the prod stack's Pulumi program under the project's mocks, cold.

What a platform engineer waits for on every unit-test run and before `pulumi up` shows
its first resource is a fresh interpreter that imports pulumi and pulumi-kubernetes,
parses the stack config and registers every resource. So each sample is a new
process (``bench._program_child``), timed from outside, and the floors it is compared
with are measured the same way in the same run, interleaved so that machine noise
falls on all of them alike:

* ``python -c pass``: the interpreter alone;
* ``import pulumi, pulumi_kubernetes``: the SDKs' import cost, which no program avoids.

The child also reports its phases (imports, first run, later runs in the same
process), which tells whether a miss is the program's own work or the SDK imports.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._report import Report, Table, Target, ratio

_ROOT = Path(__file__).resolve().parents[1]
_STACK = "prod"


@dataclass(frozen=True)
class ProgramOptions:
    runs: int = 5
    """Fresh processes per variant (the median is reported)."""
    stack: str = _STACK

    def __post_init__(self) -> None:
        if self.runs < 1:
            raise ValueError(f"need at least one run, got {self.runs}")
        if not (_ROOT / f"Pulumi.{self.stack}.yaml").exists():
            raise ValueError(f"no stack file Pulumi.{self.stack}.yaml in {_ROOT}")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(argv: Sequence[str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system) and stdout of one fresh process."""
    cpu_before = _children_cpu()
    started = time.perf_counter()
    result = subprocess.run(list(argv), cwd=_ROOT, capture_output=True, text=True,
                            timeout=300, check=False)
    elapsed = time.perf_counter() - started
    cpu = _children_cpu() - cpu_before
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}:\n"
                           f"{result.stderr[-3000:]}")
    return elapsed, cpu, result.stdout


def run(options: ProgramOptions) -> Report:
    variants = {
        "python -c pass (interpreter)": [sys.executable, "-c", "pass"],
        "import pulumi, pulumi_kubernetes": [sys.executable, "-c",
                                             "import pulumi, pulumi_kubernetes"],
        f"{options.stack} stack program under mocks": [
            sys.executable, "-m", "bench._program_child", options.stack, "1"],
    }
    walls: dict[str, list[float]] = {name: [] for name in variants}
    cpus: dict[str, list[float]] = {name: [] for name in variants}
    phases: list[dict[str, Any]] = []
    for _ in range(options.runs):
        for name, argv in variants.items():
            elapsed, cpu, stdout = _timed(argv)
            walls[name].append(elapsed)
            cpus[name].append(cpu)
            if argv[-2] == options.stack:
                phases.append(json.loads(stdout.strip().splitlines()[-1]))
    # Later runs in one process show the program's own work without first-import costs;
    # they are sampled separately so the cold figures above include exactly one run.
    warm = json.loads(_timed([sys.executable, "-m", "bench._program_child", options.stack,
                              "4"])[2].strip().splitlines()[-1])
    program_name = f"{options.stack} stack program under mocks"
    medians = {name: statistics.median(values) for name, values in walls.items()}
    rows = tuple((name, medians[name], min(values), max(values),
                  statistics.median(cpus[name]), ratio(medians[name], medians[program_name]))
                 for name, values in walls.items())
    # CPU time next to wall time: when wall is well above CPU, the machine was busy and
    # the wall figures overstate what a quiet machine would show.
    table = Table(f"fresh process, {options.runs} runs each (interleaved)",
                  ("what", "median wall s", "min s", "max s", "median CPU s",
                   "share of program"), rows)
    phase_rows = (
        ("imports (pulumi, pulumi_kubernetes, mocks)",
         statistics.median(p["imports"] for p in phases)),
        ("first run of the program (config, components, all resources)",
         statistics.median(p["first_run"] for p in phases)),
        ("a later run in the same process (median of 3)", statistics.median(warm["repeats"])),
    )
    phase_table = Table(f"inside the program process (median; {phases[0]['resources']} "
                        "resources registered)", ("phase", "seconds"), phase_rows)
    report = Report("program", {"stack": options.stack, "runs": options.runs},
                    [table, phase_table])
    report.targets = [Target("prod program under mocks, fresh process (median)",
                             medians[program_name], 2.0, False, " s")]
    return report


__all__ = ["ProgramOptions", "run"]
