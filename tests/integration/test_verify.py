"""`enclave verify` on sandbox hosts: passes when deployed; each injected fault fails its check, naming the host
and the cause; the JUnit report counts what the table and JSON count."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from enclave.checks.results import parse_junit, summary
from tests.integration.conftest import enclave, ssh

FAULTS = {
    # host: (break it, repair it)
    "node1": ("chmod 0777 /etc/enclave && rm /etc/apt/preferences.d/enclave-nvidia.pref",
              "chmod 0750 /etc/enclave"),
    "node2": ("systemctl stop chrony", "systemctl start chrony"),
    "gateway": ("usermod -s /bin/bash enclave", "usermod -s /usr/sbin/nologin enclave"),
}


def test_verify_passes_on_a_deployed_sandbox(deployed: subprocess.CompletedProcess[str], inventory: Path) -> None:
    result = enclave("verify", "-i", str(inventory), "--json")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    data = json.loads(result.stdout)
    assert data["summary"]["failed"] == 0 and data["summary"]["error"] == 0
    passed = {(r["host"], r["check"]) for r in data["results"] if r["outcome"] == "passed"}
    for host in ("gateway", "node1", "node2"):
        assert {(host, "service_user"), (host, "contract_directories"), (host, "time_sync")} <= passed
    assert ("node1", "driver_branch_pin") in passed


@pytest.fixture
def faults(deployed: subprocess.CompletedProcess[str], inventory: Path) -> Iterator[None]:
    for host, (breaks, _) in FAULTS.items():
        ssh(inventory, host, breaks)
    yield
    for host, (_, repairs) in FAULTS.items():
        ssh(inventory, host, repairs, check=False)
    # the deleted pin comes back with a deploy of the role
    enclave("deploy", "-i", str(inventory), "--limit", "node1", "--tags", "nvidia", check=True)


def test_each_fault_fails_its_check_naming_host_and_cause(faults: None, inventory: Path, tmp_path: Path) -> None:
    junit = tmp_path / "verify.xml"
    result = enclave("verify", "-i", str(inventory), "--junit", str(junit))
    assert result.returncode == 1
    failed = {(r.host, r.check): r.message for r in parse_junit(junit) if r.outcome == "failed"}
    assert failed == {
        ("node1", "contract_directories"): "/etc/enclave is root:enclave 0777, should be root:enclave 0750",
        ("node1", "driver_branch_pin"):
            "the driver branch pin /etc/apt/preferences.d/enclave-nvidia.pref is missing",
        ("node2", "time_sync"): "chrony is not running",
        ("gateway", "service_user"): "enclave can log in (shell /bin/bash)",
    }
    counts = summary(parse_junit(junit))
    assert f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped" in result.stdout

    limited = enclave("verify", "-i", str(inventory), "--limit", "node2", "--json")
    data = json.loads(limited.stdout)
    assert {r["host"] for r in data["results"]} == {"node2"} and data["summary"]["failed"] == 1
