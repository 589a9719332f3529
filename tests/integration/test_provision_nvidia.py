"""The nvidia role in no-GPU mode on sandbox hosts, and `enclave plan` reading real hosts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.integration.conftest import DEPLOY_LOG, enclave, ssh

PIN = "/etc/apt/preferences.d/enclave-nvidia.pref"


def test_nvidia_role_skips_the_stack_and_says_why(deployed: subprocess.CompletedProcess[str], inventory: Path) -> None:
    assert "TASK  Say why the NVIDIA stack is skipped on hosts without GPUs" in deployed.stdout
    stdout = DEPLOY_LOG.read_text()
    assert "node1: no NVIDIA stack installed (the inventory sets enclave_gpu: none)" in stdout


def test_no_gpu_mode_still_renders_and_validates_pins_and_repository(deployed: subprocess.CompletedProcess[str],
                                                                     inventory: Path) -> None:
    out = ssh(inventory, "node1", f"cat {PIN}; ls /etc/enclave/nvidia/; "
                                  "ls /etc/apt/sources.list.d/; apt-config dump | grep -c nvidia-").stdout
    assert "Pin: version /^([0-9]+:)?580\\./" in out and "Pin-Priority: -1" in out
    assert "enclave-nvidia.sources" in out.split("Pin-Priority: -1")[1].split("enclave.sources")[0], \
        "the CUDA source is staged in /etc/enclave/nvidia, not active"
    assert out.strip().splitlines()[-1] != "0", "the unattended-upgrades blacklist is loaded by apt"
    assert ssh(inventory, "node1", "test -e /etc/apt/sources.list.d/enclave-nvidia.sources", check=False).returncode
    assert ssh(inventory, "gateway", f"test -e {PIN}", check=False).returncode, "the gateway runs no nvidia role"


def test_bad_driver_settings_are_refused_and_the_host_keeps_its_files(
        deployed: subprocess.CompletedProcess[str], inventory: Path) -> None:
    before = ssh(inventory, "node1", f"sha256sum {PIN}").stdout

    # A branch that is no branch: refused by the role's own check before any file is written.
    result = enclave("deploy", "-i", str(inventory), "--limit", "node1", "--tags", "nvidia",
                     "-e", json.dumps({"nvidia_driver_branch": "5(8"}))
    assert result.returncode == 1
    logs = enclave("logs", check=True).stdout
    assert "nvidia_driver_branch must be a branch number" in logs and "5(8" in logs

    # A pin file apt cannot parse (no packages to pin): refused by apt itself through the template's validation.
    result = enclave("deploy", "-i", str(inventory), "--limit", "node1", "--tags", "nvidia",
                     "-e", json.dumps({"nvidia_pinned_packages": []}))
    assert result.returncode == 1
    logs = enclave("logs", check=True).stdout
    assert "Pin the NVIDIA packages to the driver branch" in logs and "failed to validate" in logs

    assert ssh(inventory, "node1", f"sha256sum {PIN}").stdout == before


def test_plan_reads_the_sandbox_hosts(deployed: subprocess.CompletedProcess[str], inventory: Path) -> None:
    result = enclave("plan", "-i", str(inventory), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["model"] == "sandbox-tiny"
    assert set(data["hosts"]) == {"gateway", "node1", "node2"}
    for host in data["hosts"].values():
        assert host["gpus"] == [] and host["memory_mb"] > 0 and host["disk_free_bytes"] > 0
        assert host["interfaces"][0]["name"] == "eth0"
    skips = {f["host"]: f["message"] for f in data["findings"] if f["severity"] == "skip"}
    assert set(skips) == {"node1", "node2"} and all("enclave_gpu: none" in m for m in skips.values())
    assert not [f for f in data["findings"] if f["severity"] == "error"]

    table = enclave("plan", "-i", str(inventory), check=True).stdout
    assert "preflight" in table and "ready to deploy" in table
