"""The render dump (tests/support/render_dump.py) is a tool for proving refactors change
nothing; it is only useful if two runs of the same code give the same text and if the
variants it claims to cover are really rendered."""

from __future__ import annotations

import json

from tests.support import render_dump


def test_two_runs_of_the_same_code_dump_the_same_text() -> None:
    assert render_dump.render() == render_dump.render()


def test_the_mysql_variant_renders_port_forward_replication_init() -> None:
    dumped = json.loads(render_dump.render())
    assert sorted(dumped) == ["dev", "dev-mysql84-port-forward", "prod"]
    (init,) = [r for r in dumped["dev-mysql84-port-forward"]
               if r["type"] == "pulumi-python:dynamic/mysql:ReplicationInit"]
    assert init["inputs"]["flavor"] == "mysql"
    assert init["inputs"]["primary"] == {"host": "127.0.0.1", "port": 13306.0}
