"""seed: the staging host's read-only rsync daemon (enclave-weights-seed.service) runs as its own unprivileged user
and is confined (`systemd-analyze security` at most weights_seed_security_exposure_max)."""

from __future__ import annotations

from typing import Any

import pytest

from enclave.checks.exposure import judge, unit_exposure
from enclave.checks.settings import host_settings

testinfra_hosts = ["ansible://enclave_staging"]

UNIT = "enclave-weights-seed.service"


@pytest.fixture
def seed(host: Any, hostvars: dict[str, Any]) -> dict[str, Any]:
    if host.run(f"systemctl cat {UNIT}").rc != 0:
        pytest.skip(f"no {UNIT} here: the weights were not staged yet (enclave deploy or enclave weights)")
    return host_settings(hostvars, "weights")


def test_seed_runs_as_its_own_user(host: Any, seed: dict[str, Any]) -> None:
    pid = int(host.run(f"systemctl show --property MainPID --value {UNIT}").stdout.strip() or 0)
    assert pid > 0, f"{UNIT} has no main process"
    user = host.run(f"stat -c %U /proc/{pid}").stdout.strip()  # ps cuts names past 8 characters
    assert user == seed["weights_seed_user"], f"{UNIT} runs as {user}, should run as {seed['weights_seed_user']}"


def test_seed_unit_is_confined(host: Any, seed: dict[str, Any], request: pytest.FixtureRequest) -> None:
    judge(request, seed["inventory_hostname"], UNIT, unit_exposure(host, UNIT),
          float(seed["weights_seed_security_exposure_max"]))
