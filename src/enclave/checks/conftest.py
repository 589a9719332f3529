"""Fixtures for the shipped checks. Hosts come from testinfra's Ansible backend (--hosts, --ansible-inventory)."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

from enclave.checks.settings import host_settings


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--deep", action="store_true", default=False,
                     help="Rehash everything instead of trusting stamps (weights checks).")


@pytest.fixture
def hostvars(host: Any) -> dict[str, Any]:
    # Checked without an inventory (testinfra's local backend: the GPU smoke check on a node): no host
    # variables, so the roles' defaults apply.
    if host.backend.NAME != "ansible":
        return {}
    return dict(host.ansible.get_variables())


@pytest.fixture
def settings(hostvars: dict[str, Any]) -> dict[str, Any]:
    return host_settings(hostvars, "base", "nvidia")


@pytest.fixture
def in_container(host: Any) -> bool:
    return host.run("systemd-detect-virt --container --quiet").rc == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`enclave verify --limit`: keep only the named hosts' checks."""
    wanted = {h for h in os.environ.get("ENCLAVE_VERIFY_HOSTS", "").split(",") if h}
    if not wanted:
        return
    keep, drop = [], []
    for item in items:
        match = re.search(r"\[ansible://([^\]]+)\]$", item.name)
        (keep if match and match.group(1) in wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
