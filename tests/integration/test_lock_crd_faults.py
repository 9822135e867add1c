"""LockCRD drift: a CRD that lost Established, or whose names were refused, shows on preview.

Through the real provider server against the fixture the other LockCRD tests use
(tests/integration/test_lock_crd_provider.py). The CRD's status is changed behind the
provider's back, as a name conflict or an API server that stopped serving it would.
"""

from __future__ import annotations

import pytest

from tests.integration.test_lock_crd_provider import _crd, _driver, _inputs, fake, server
from tests.support.fake_kube import CRD_GROUP, CRD_PLURAL, FakeKubeServer
from tests.support.provider_server import ProviderError, ProviderServer

pytestmark = pytest.mark.integration
__all__ = ["fake", "server"]  # the fixtures, re-used


def _set_condition(kube: FakeKubeServer, kind: str, status: str, reason: str) -> None:
    crd = _crd(kube)
    assert crd is not None
    conditions = [c for c in crd["status"]["conditions"] if c["type"] != kind]
    conditions.append({"type": kind, "status": status, "reason": reason,
                       "message": f"set by the test: {reason}"})
    crd["status"]["conditions"] = conditions
    kube.put_object(CRD_GROUP, CRD_PLURAL, "", crd)


def test_a_crd_that_lost_established_is_drift_and_up_waits_for_it(
        server: ProviderServer, fake: FakeKubeServer) -> None:
    driver = _driver(server)
    driver.up(_inputs(fake))
    _set_condition(fake, "Established", "False", "NotServing")
    assert driver.refresh()["established"] is False
    preview = driver.preview(_inputs(fake))
    assert preview is not None
    assert preview.changes is True, "preview after refresh hid a CRD that is not Established"
    # The update re-applies and waits for Established; the fake never re-establishes a
    # CRD by itself, so the up fails naming the condition instead of succeeding.
    with pytest.raises(ProviderError, match="was not Established within 1s"):
        driver.up(_inputs(fake, establishTimeoutSeconds=1))
    fake.establish(_crd(fake)["metadata"]["name"])  # type: ignore[index]
    assert driver.up(_inputs(fake)).operation == "update"
    assert driver.refresh()["established"] is True
    preview = driver.preview(_inputs(fake))
    assert preview is not None
    assert preview.changes is False


def test_names_refused_after_install_is_drift_and_up_names_the_conflict(
        server: ProviderServer, fake: FakeKubeServer) -> None:
    driver = _driver(server)
    driver.up(_inputs(fake))
    _set_condition(fake, "NamesAccepted", "False", "ShortNamesConflict")
    outputs = driver.refresh()
    assert outputs["namesAccepted"] is False
    preview = driver.preview(_inputs(fake))
    assert preview is not None
    assert preview.changes is True, "preview after refresh hid NamesAccepted=False"
    with pytest.raises(ProviderError, match="was not accepted: ShortNamesConflict"):
        driver.up(_inputs(fake))
