"""components.locks.rbac: the least a lock client needs, and who gets it.

A lock client creates Lock objects and writes their status, and nothing else; viewers
read both; bindings name ServiceAccounts as ``namespace/name`` and refuse anything else
before a resource is declared.
"""

from __future__ import annotations

import pytest

from components.locks import rbac
from distlock.crd import GROUP, PLURAL


def test_a_lock_user_creates_locks_and_writes_only_their_status() -> None:
    assert rbac.lock_user_rules() == [
        {"api_groups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list", "watch",
                                                                 "create"]},
        {"api_groups": [GROUP], "resources": [f"{PLURAL}/status"],
         "verbs": ["get", "update", "patch"]},
    ]
    assert "delete" not in rbac.USER_VERBS
    assert set(rbac.VIEW_VERBS) == {"get", "list", "watch"}


def test_role_names_are_per_namespace() -> None:
    assert rbac.user_role_name("shop") == "mysql-cluster:shop:lock-user"
    assert rbac.viewer_role_name("shop") == "mysql-cluster:shop:lock-viewer"


@pytest.mark.parametrize("accounts", [["worker"], ["/worker"], ["shop/"]])
def test_a_binding_refuses_an_account_that_is_not_namespace_slash_name(
        accounts: list[str]) -> None:
    with pytest.raises(ValueError, match="service accounts are 'namespace/name'"):
        rbac.lock_user_binding("b", role_name="r", service_accounts=accounts, namespace="shop")


def test_a_binding_needs_an_account() -> None:
    with pytest.raises(ValueError, match="at least one service account"):
        rbac.lock_user_binding("b", role_name="r", service_accounts=[], namespace="shop")
