"""The Grafana dashboard in deploy/monitoring: well formed, laid out, and every query valid PromQL.

No Grafana runs here, so the checks are the fields Grafana's dashboard schema (v39+, what
Grafana 10 and 11 write) requires of a dashboard and its panels, and every query is handed to
``promtool check rules`` as a recording rule (with the dashboard variables filled in), which
parses it as Prometheus would.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.support.procs import require_binary, run

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "monitoring" / "dashboard.json"


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def test_the_dashboard_has_what_grafana_requires() -> None:
    dash = load()
    assert dash["schemaVersion"] >= 39
    assert dash["uid"]
    assert dash["title"]
    assert {v["name"] for v in dash["templating"]["list"]} == {
        "datasource", "namespace", "mysql_job", "etcd_job"}
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        assert panel["type"] in {"row", "timeseries", "stat"}
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"], panel["title"]


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in load()["panels"]:
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, (panel["title"], cells.get((x, y)))
                cells[(x, y)] = panel["title"]


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    require_binary("promtool")
    rules = []
    for panel in load()["panels"]:
        for target in panel.get("targets", []):
            expr = re.sub(r"\$\w+", "x", target["expr"])
            rules.append({"record": f"dashboard:panel{panel['id']}:{target['refId']}",
                          "expr": expr})
    path = tmp_path / "rules.json"  # promtool reads YAML, of which JSON is a subset
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run(["promtool", "check", "rules", str(path)], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
