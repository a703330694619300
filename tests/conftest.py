"""Shared pytest options: slow tests (real VM bakes) run only when asked for."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run tests marked slow (bookworm bake, tuning boots, base disks, cold wheelhouse)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow (tens of minutes): run with --run-slow (README: Test tiers and timings)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
