"""Shared pytest setup: the slow marker and the JAX CPU flag (via mo_rl)."""

import pytest

import mo_rl  # noqa: F401  (sets XLA_FLAGS before any test runs JAX)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="run long learning tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow learning run: use --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
