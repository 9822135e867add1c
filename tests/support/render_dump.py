"""Dump every resource the program registers under mocks, as stable JSON.

Why: a refactor that "changes nothing" must be checked, not believed. The dump holds each
resource's type, logical name, inputs, secret paths, parent and dependencies (URNs),
sorted by type and name (registration order varies between runs: resources register from
concurrent callbacks), for the stacks people run (``Pulumi.dev.yaml``, ``Pulumi.prod.yaml``)
and one MySQL 8.4 variant reached by port-forward, the branch both files leave untaken.
Run it on two commits and diff the files: an empty diff means both render the same objects.

    venv/bin/python -m tests.support.render_dump > /tmp/after.json
"""

from __future__ import annotations

import json
import sys
from typing import Any

from tests.support import mocks

# The stack variants dumped: (label, stack file, overrides of top-level keys).
MYSQL84_PORT_FORWARD: dict[str, Any] = {
    "flavor": "mysql", "version": "8.4.3", "replicas": 3,
    "replicationInit": {"enabled": True, "access": "port-forward",
                        "endpoints": ["127.0.0.1:13306", "127.0.0.1:13307", "127.0.0.1:13308"]},
}


def variants() -> list[tuple[str, mocks.ProgramResult]]:
    dev_mysql = mocks.load_stack_file("dev")[f"{mocks.PROJECT}:mysql"]
    return [
        ("dev", mocks.run_stack("dev")),
        ("prod", mocks.run_stack("prod")),
        ("dev-mysql84-port-forward",
         mocks.run_stack("dev", mysql={**dev_mysql, **MYSQL84_PORT_FORWARD})),
    ]


def dump(result: mocks.ProgramResult) -> list[dict[str, Any]]:
    return [{"type": r.type, "name": r.name, "inputs": r.inputs,
             "secret_paths": sorted(r.secret_paths), "parent": r.parent,
             "dependencies": sorted(r.dependencies)}
            for r in sorted(result.resources, key=lambda r: (r.type, r.name))]


def render() -> str:
    return json.dumps({label: dump(result) for label, result in variants()},
                      indent=1, sort_keys=True, default=repr)


def main() -> int:
    sys.stdout.write(render() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
