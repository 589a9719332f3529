"""`enclave verify` on sandbox hosts: passes when deployed; each injected fault fails its check, naming the host
and the cause; the JUnit report counts what the table and JSON count."""

from __future__ import annotations

import json
import re
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
    # the confinement checks pass showing the measured exposure of each unit where it runs
    scores = {(r["host"], r["check"]): r["message"] for r in data["results"]
              if r["check"] in ("engine_unit_is_confined", "seed_unit_is_confined") and r["outcome"] == "passed"}
    assert set(scores) == {("node1", "engine_unit_is_confined"), ("node2", "engine_unit_is_confined"),
                           ("gateway", "seed_unit_is_confined")}, scores
    for (host, check), message in scores.items():
        unit, limit = (("enclave-engine.service", "2") if check.startswith("engine") else
                       ("enclave-weights-seed.service", "3"))
        assert re.fullmatch(rf"{re.escape(unit)} on {host}: exposure \d+(\.\d+)? \(limit {limit}\)", message), message


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


# -- engine: the faults the engine checks exist for, on node2 (node1 keeps serving for the rest of the session) --
ENGINE_FAULTS = (
    "chmod 0644 /etc/enclave/engine-api-key.env",
    "sed -i '/^VLLM_NO_USAGE_STATS=/d' /etc/enclave/engine.env",
    # the unit quotes every word of ExecStart
    """sed -i 's/"--host" "[0-9.]*"/"--host" "0.0.0.0"/' /etc/systemd/system/enclave-engine.service""",
    # a drop-in that undoes the unit's confinement (an operator "fixing" a start problem the wide way)
    "mkdir -p /etc/systemd/system/enclave-engine.service.d && printf '%s\\n' '[Service]' ProtectSystem=no "
    "PrivateDevices=no ProtectProc=default RestrictNamespaces=no RestrictAddressFamilies= SystemCallFilter= "
    "SystemCallArchitectures= > /etc/systemd/system/enclave-engine.service.d/zz-test-unconfined.conf",
)
# The role does not own drop-ins: the test removes its own before the redeploy.
ENGINE_DROP_IN = "/etc/systemd/system/enclave-engine.service.d/zz-test-unconfined.conf"


@pytest.fixture
def engine_broken(deployed: subprocess.CompletedProcess[str], inventory: Path) -> Iterator[None]:
    try:
        for fault in ENGINE_FAULTS:
            ssh(inventory, "node2", fault)
        # a fault that did not land would make the test prove nothing
        assert ssh(inventory, "node2", """grep -c -- '"--host" "0.0.0.0"' /etc/systemd/system/enclave-engine.service """
                                       "&& ! grep -q VLLM_NO_USAGE_STATS /etc/enclave/engine.env "
                                       f"&& grep -q ProtectSystem=no {ENGINE_DROP_IN}").returncode == 0
        ssh(inventory, "node2", "systemctl daemon-reload && systemctl restart enclave-engine.service")
        yield
    finally:
        ssh(inventory, "node2", f"rm -f {ENGINE_DROP_IN} && systemctl daemon-reload", check=False)
        # the role puts back the unit, the environment and the key file's mode, and restarts the engine
        enclave("deploy", "-i", str(inventory), "--limit", "node2", "--tags", "engine", check=True)


def test_each_engine_fault_fails_its_check_naming_host_and_cause(engine_broken: None, inventory: Path) -> None:
    result = enclave("verify", "-i", str(inventory), "--limit", "node2", "--json")
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr
    failed = {r["check"]: r["message"] for r in json.loads(result.stdout)["results"]
              if r["host"] == "node2" and r["outcome"] == "failed"}
    assert set(failed) == {"engine_listens_on_the_private_address_only",
                           "engine_environment_is_offline_without_telemetry",
                           "engine_key_file_is_closed_and_off_the_command_line",
                           "engine_unit_is_confined"}, failed
    assert "the engine listens on 0.0.0.0:8000" in failed["engine_listens_on_the_private_address_only"]
    assert "VLLM_NO_USAGE_STATS is not set" in failed["engine_environment_is_offline_without_telemetry"]
    assert ("/etc/enclave/engine-api-key.env is root:root 0644, should be root:root 0600"
            in failed["engine_key_file_is_closed_and_off_the_command_line"])
    # host, unit, the score above the limit, and what costs most
    confined = failed["engine_unit_is_confined"]
    assert re.match(r"enclave-engine\.service on node2: exposure (\d+(\.\d+)?) \(limit 2\): too exposed; the "
                    r"costliest missing settings: ", confined), confined
    assert float(confined.split("exposure ")[1].split()[0]) > 2.0, confined

    ssh(inventory, "node2", "systemctl stop enclave-engine.service")
    stopped = enclave("verify", "-i", str(inventory), "--limit", "node2", "--json")
    assert stopped.returncode == 1
    outcomes = {r["check"]: (r["outcome"], r["message"]) for r in json.loads(stopped.stdout)["results"]
                if r["host"] == "node2"}
    assert outcomes["engine_unit_enabled_and_active"] == (
        "failed", "enclave-engine.service is inactive, not active"), outcomes
