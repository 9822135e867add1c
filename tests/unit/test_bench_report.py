"""The benchmark report's arithmetic: what a verdict or a p99 says must be what was measured."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench._report import Report, Table, Target, percentile, ratio


def test_percentile_is_nearest_rank_so_it_is_always_an_observed_value() -> None:
    samples = [float(v) for v in range(1, 101)]
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 99) == 99.0
    # With fewer samples than 1/(1-p), p99 is the maximum, not an interpolation below it.
    assert percentile([3.0, 1.0, 2.0], 99) == 3.0
    assert math.isnan(percentile([], 50))


@pytest.mark.parametrize(("measured", "higher_is_better", "verdict"), [
    (0.9, True, "met"), (0.7, True, "MISSED"), (40.0, False, "met"), (60.0, False, "MISSED"),
    (None, True, "not measured"), (float("nan"), False, "not measured"),
])
def test_target_verdicts(measured: float | None, higher_is_better: bool, verdict: str) -> None:
    goal = 0.8 if higher_is_better else 50.0
    assert Target("t", measured, goal, higher_is_better, "x").verdict == verdict


def test_ratio_of_missing_or_zero_is_none_not_a_crash() -> None:
    assert ratio(None, 2.0) is None
    assert ratio(1.0, 0.0) is None
    assert ratio(1.0, 4.0) == 0.25


def test_report_saves_json_with_machine_and_prints_every_row(tmp_path: Path) -> None:
    table = Table("t", ("method", "seconds", "note"), (("raw", 1.5, ""), ("dump", None, "n/a")))
    report = Report("demo", {"size_mb": 8}, [table],
                    [Target("speed", 6.0, 5.0, True, "x")], ["a note"])
    text = report.render()
    assert "raw" in text
    assert "dump" in text
    assert "met" in text
    saved = json.loads(report.save(tmp_path).read_text())
    assert saved == json.loads((tmp_path / "demo-latest.json").read_text())
    assert saved["tables"][0]["rows"][1] == {"method": "dump", "seconds": None, "note": "n/a"}
    assert saved["targets"][0]["met"] is True
    assert {"nproc", "cpu", "memory", "kernel", "python"} <= set(saved["machine"])
    markdown = (tmp_path / "demo-latest.md").read_text()
    assert "| raw | 1.50 |  |" in markdown
    assert "| speed | 6.00 | ≥ 5.00x | met | 20% above the goal |" in markdown


@pytest.mark.parametrize(("target", "note"), [
    (Target("t", 1.33, 2.0, False, " s"), "34% under the goal"),
    (Target("t", 2.2, 2.0, False, " s"), "10% over the goal"),
    (Target("t", 0.6, 0.8, True, "x"), "25% short of the goal"),
    (Target("t", 0.8, 0.8, True, "x"), "at the goal"),
    (Target("t", None, 0.8, True, "x"), "the project's path did not run"),
    (Target("t", 0.5, 0.8, True, "x", "CPU-bound"), "CPU-bound"),
])
def test_every_verdict_row_says_why(target: Target, note: str) -> None:
    """A met target's row is not blank either: it says by how much (issue 19: the program
    benchmark printed a targets row with nothing beside "met")."""
    assert target.note == note
    rows = Report("demo", {}, [], [target])._all_tables()[-1].rows
    assert rows == ((target.name, target.measured, rows[0][2], target.verdict, note),)
