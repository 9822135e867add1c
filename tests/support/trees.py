"""Walking parsed YAML/JSON documents, for tests that check every value in them."""

from __future__ import annotations

from collections.abc import Iterator


def walk(node: object, path: str = "") -> Iterator[tuple[str, object]]:
    """Every value in ``node`` with its path (``.jobs.test.steps[0].run``), leaves first."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]")
    yield path, node
