"""What every benchmark hands back: tables, ratios against targets, and where they ran.

A benchmark number means nothing without the machine it came from and the baseline it
was measured against, so a :class:`Report` always carries both: the machine facts
(:func:`machine`) and, for every target, the ratio of the project's path to a baseline
measured *in the same run* (never a figure remembered from another day or machine).
The same Report prints as plain-text tables for people and is written as JSON under
``bench/results/`` (git-ignored) for anyone who wants to compare runs.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

Cell = str | int | float | None

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]

    def render(self) -> str:
        cells = [[_format(c) for c in row] for row in self.rows]
        widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(self.columns)]
        # Numbers right-aligned so that magnitudes line up; text left-aligned.
        numeric = [all(isinstance(row[i], int | float) or row[i] is None for row in self.rows)
                   for i in range(len(self.columns))]

        def line(values: Sequence[str]) -> str:
            return "  ".join(v.rjust(w) if num else v.ljust(w)
                             for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

        rule = "  ".join("-" * w for w in widths)
        return "\n".join([self.title, line(self.columns), rule, *(line(r) for r in cells)])


    def markdown(self) -> str:
        def line(values: Sequence[str]) -> str:
            return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

        return "\n".join([f"**{self.title}**", "", line(self.columns),
                          line(["---"] * len(self.columns)),
                          *(line([_format(c) for c in row]) for row in self.rows)])


@dataclass(frozen=True)
class Target:
    """A goal from the issue: ``measured`` compared with ``goal`` (a ratio or a bound).

    ``measured`` is None when the project path could not be measured (not landed yet, or
    failed); ``why`` then says why, and for a missed target it says what would close it.
    """

    name: str
    measured: float | None
    goal: float
    higher_is_better: bool
    unit: str
    why: str = ""

    @property
    def met(self) -> bool | None:
        if self.measured is None or math.isnan(self.measured):
            return None
        return self.measured >= self.goal if self.higher_is_better else self.measured <= self.goal

    @property
    def verdict(self) -> str:
        return {True: "met", False: "MISSED", None: "not measured"}[self.met]

    @property
    def note(self) -> str:
        """``why`` when given, else how far the figure is from the goal, so that no row of
        the targets table is blank where a reader looks for the reason of its verdict."""
        if self.why:
            return self.why
        if self.met is None or self.measured is None:
            return "the project's path did not run"
        if self.goal == 0:  # no ratio to a goal of nothing: say by how much
            return "at the goal" if self.measured == 0 else \
                f"{_format(self.measured)}{self.unit} {'under' if self.met else 'over'} the goal"
        margin = abs(self.measured - self.goal) / self.goal
        if margin < 0.005:
            return "at the goal"
        if self.higher_is_better:
            return f"{margin:.0%} {'above' if self.met else 'short of'} the goal"
        return f"{margin:.0%} {'under' if self.met else 'over'} the goal"


@dataclass
class Report:
    benchmark: str
    parameters: dict[str, Any]
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        parts = [f"== {self.benchmark} ==",
                 "parameters: " + ", ".join(f"{k}={v}" for k, v in self.parameters.items())]
        parts += [table.render() for table in self._all_tables()]
        parts += [f"note: {n}" for n in self.notes]
        return "\n\n".join(parts)

    def markdown(self) -> str:
        """The same report for docs/benchmarks.md: tables, targets and notes as markdown."""
        parts = [f"### {self.benchmark}",
                 "Parameters: " + ", ".join(f"`{k}={v}`" for k, v in self.parameters.items())]
        parts += [table.markdown() for table in self._all_tables()]
        parts += [f"Note: {n}" for n in self.notes]
        return "\n\n".join(parts) + "\n"

    def _all_tables(self) -> list[Table]:
        if not self.targets:
            return list(self.tables)
        rows = tuple((t.name, t.measured, ("≥ " if t.higher_is_better else "≤ ") +
                      f"{_format(t.goal)}{t.unit}", t.verdict, t.note) for t in self.targets)
        return [*self.tables, Table("targets", ("target", "measured", "goal", "verdict",
                                                "note"), rows)]

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "parameters": self.parameters,
            "tables": [{"title": t.title, "rows": [dict(zip(t.columns, r, strict=True))
                                                    for r in t.rows]} for t in self.tables],
            "targets": [{**asdict(t), "met": t.met} for t in self.targets],
            "notes": self.notes,
        }

    def save(self, directory: Path = RESULTS_DIR) -> Path:
        """``<benchmark>-<UTC time>.json``, plus ``-latest.json`` and ``-latest.md`` (the
        markdown docs/benchmarks.md is assembled from); returns the first."""
        directory.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n"
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = directory / f"{self.benchmark}-{stamp}.json"
        path.write_text(payload)
        (directory / f"{self.benchmark}-latest.json").write_text(payload)
        (directory / f"{self.benchmark}-latest.md").write_text(self.markdown())
        return path


def _format(value: Cell) -> str:  # noqa: PLR0911 - one return per kind of cell
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        magnitude = abs(value)
        if magnitude >= 100:
            return f"{value:.0f}"
        if magnitude >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}" if magnitude >= 0.1 or magnitude == 0 else f"{value:.3f}"
    return value


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: always a value that was really observed (p99 of 50 = max)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def _command_output(argv: Sequence[str]) -> str:
    if shutil.which(argv[0]) is None:
        return f"{argv[0]} not installed"
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=20,
                                check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unavailable ({error})"
    return (result.stdout or result.stderr).strip()


def machine() -> dict[str, str]:
    """The facts docs/benchmarks.md records next to every figure."""
    model = "unknown"
    for line in _command_output(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    mem_kb = 0
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        match = re.search(r"^MemTotal:\s+(\d+) kB", meminfo.read_text(), re.MULTILINE)
        mem_kb = int(match.group(1)) if match else 0
    # The etcd the benchmarks start: the 3.5 build (tests/support/tools.py), not PATH's.
    from tests.support.tools import find_tool  # noqa: PLC0415 - bench's only test import here

    built = find_tool("etcd")
    etcd = _command_output([str(built) if built else "etcd", "--version"]).splitlines()
    return {
        "nproc": str(os.cpu_count() or 0),
        "cpu": model,
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "mariadbd": _command_output(["mariadbd", "--version"]),
        "etcd": etcd[0] if etcd else "unknown",
        "python": sys.version.split()[0],
    }


__all__ = ["RESULTS_DIR", "Cell", "Report", "Table", "Target", "machine", "percentile", "ratio"]
