"""Shared fixtures for the unit tests: program runs under the mocks in tests/support/mocks.py.

A run of the whole program takes a fraction of a second, but dozens of tests inspect
the same stacks, so each stack's run is shared per session. A run's result is plain
recorded data: sharing it cannot leak state between tests (every run has its own event
loop and root stack).
"""

from __future__ import annotations

import asyncio
import warnings

import pytest

from tests.support.mocks import ProgramResult, load_stack_file, run_program, stack_with
from tests.support.objects import run_with_tls_and_metrics


@pytest.fixture(autouse=True)
def _usable_event_loop() -> None:
    """Pulumi's runtime creates futures on the current event loop at resource creation.
    A test that ran ``asyncio.run`` leaves none behind (it sets the loop to None), which
    would fail the next test that registers resources; give every test a usable one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = asyncio.get_event_loop()
        except RuntimeError:
            loop = None
    if loop is None or loop.is_closed():
        asyncio.set_event_loop(asyncio.new_event_loop())


@pytest.fixture(scope="session")
def dev() -> ProgramResult:
    return run_program(load_stack_file("dev"), stack="dev")


@pytest.fixture(scope="session")
def prod() -> ProgramResult:
    return run_program(load_stack_file("prod"), stack="prod")


@pytest.fixture(scope="session")
def prod_mysql() -> ProgramResult:
    """The prod stack with the MySQL 8.4 flavor: both flavors go through every check."""
    return run_program(stack_with("prod", flavor="mysql", version="8.4.5"), stack="prod")


@pytest.fixture(scope="session")
def dev_mysql() -> ProgramResult:
    return run_program(stack_with("dev", flavor="mysql", version="8.4.5"), stack="dev")


@pytest.fixture(scope="session")
def prod_tls_metrics() -> ProgramResult:
    return run_with_tls_and_metrics(load_stack_file("prod"), stack="prod")


@pytest.fixture(scope="session")
def prod_mysql_tls_metrics() -> ProgramResult:
    return run_with_tls_and_metrics(stack_with("prod", flavor="mysql", version="8.4.5"),
                                    stack="prod")


@pytest.fixture(scope="session", params=["dev", "prod", "dev_mysql", "prod_mysql",
                                         "prod_tls_metrics", "prod_mysql_tls_metrics"])
def every_stack(request: pytest.FixtureRequest) -> ProgramResult:
    """Each stack file with each flavor, and prod with every TLS and metrics switch on: for
    the checks every object must pass (schemas, security contexts)."""
    result: ProgramResult = request.getfixturevalue(request.param)
    return result


@pytest.fixture(scope="session", params=["dev", "prod", "dev_mysql", "prod_mysql"])
def any_stack(request: pytest.FixtureRequest) -> ProgramResult:
    """Each stack file with each flavor."""
    result: ProgramResult = request.getfixturevalue(request.param)
    return result

