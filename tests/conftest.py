"""Shared pytest options: slow tests (real VM bakes) run only when asked for."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run tests marked slow (real Packer bake + QEMU boot, tens of minutes)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: real VM bake/boot; run with --run-slow (see README)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
