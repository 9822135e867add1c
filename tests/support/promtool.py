"""``promtool test rules`` on the rule document the program deploys.

Each case is a set of input series and, for one alert at one evaluation time, the alerts
expected (an empty list means the alert must stay quiet). The rule document is written to a
temporary file exactly as :func:`components.mysql._metrics.alert_rules` returns it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships with kubernetes; no stubs pinned

from tests.support.procs import require_binary, run


def series_text(metric: str, labels: Mapping[str, str]) -> str:
    inner = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    return f"{metric}{{{inner}}}"


def promtool_test(rules: Mapping[str, Any], input_series: Sequence[Mapping[str, str]],
                  alert_tests: Sequence[Mapping[str, Any]], *, interval: str = "1m") -> str:
    """Run one promtool test; return its output, raising AssertionError on failure."""
    require_binary("promtool")
    with tempfile.TemporaryDirectory(prefix="promtool-") as tmp:
        directory = Path(tmp)
        (directory / "rules.yaml").write_text(yaml.safe_dump(dict(rules), sort_keys=False))
        (directory / "test.yaml").write_text(yaml.safe_dump({
            "rule_files": ["rules.yaml"],
            "evaluation_interval": interval,
            "tests": [{"interval": interval, "input_series": list(input_series),
                       "alert_rule_test": list(alert_tests)}],
        }, sort_keys=False))
        checked = run(["promtool", "check", "rules", str(directory / "rules.yaml")], check=False)
        if checked.returncode != 0:
            raise AssertionError(f"promtool check rules failed:\n{checked.stdout}{checked.stderr}")
        result = run(["promtool", "test", "rules", str(directory / "test.yaml")], check=False)
        if result.returncode != 0:
            raise AssertionError(f"promtool test rules failed:\n{result.stdout}{result.stderr}")
        return result.stdout


__all__ = ["promtool_test", "series_text"]
