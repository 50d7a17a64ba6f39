"""Shared pytest setup: the slow marker, the JAX CPU flag (via mo_rl), debug checks.

Debug mode is on for every test: MO_RL_CHECK_ACTIONS=1 makes every training env
stack (mo_rl.batching.batched) check each action against the action space inside
jit (mo_rl.wrappers.CheckActions). The study CLI's run flags are reset around
each test so one test's --allow-* never leaks into another.
"""

import os

os.environ.setdefault("MO_RL_CHECK_ACTIONS", "1")

import pytest

import mo_rl  # noqa: F401  (sets XLA_FLAGS before any test runs JAX)
from mo_rl.config import RunFlags, set_run_flags


@pytest.fixture(autouse=True)
def _strict_run_flags():
    set_run_flags(RunFlags())
    yield
    set_run_flags(RunFlags())


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="run long learning tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow learning run: use --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
