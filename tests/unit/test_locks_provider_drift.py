"""LockCRD drift: a refresh that found the CRD not Established, or its names refused, is a change.

``read()`` against the real API server (tests/integration/test_lock_crd_provider.py) records
``established`` and ``namesAccepted``; what this pins is that ``diff`` turns either being False
into an update, so ``pulumi preview`` after a refresh cannot hide a CRD that stopped serving.
The real apiextensions controllers re-establish a CRD whose status is edited by hand, so the
lost-condition state cannot be held still on a real server long enough to drive it end to end.
"""

from __future__ import annotations

from typing import Any

import pytest

from components.locks._provider import LockCRDProvider


def _state(**outs: Any) -> dict[str, Any]:
    return {"crdName": "locks.mysql-cluster.io", "owner": "mysql-cluster/dev", **outs}


@pytest.mark.parametrize(("refreshed", "changes"), [
    ({"established": True, "namesAccepted": True}, False),
    ({"established": True}, False),  # create's outputs carry no namesAccepted
    ({"established": False, "namesAccepted": True}, True),
    ({"established": True, "namesAccepted": False}, True),
])
def test_a_refreshed_crd_that_is_not_serving_is_drift(refreshed: dict[str, Any],
                                                       changes: bool) -> None:
    news = _state()
    result = LockCRDProvider().diff("locks.mysql-cluster.io", _state(**refreshed), news)
    assert result.changes is changes
    assert result.replaces == []
