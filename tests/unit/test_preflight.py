"""Every preflight decision, on hosts described around real recorded nvidia-smi outputs."""

from __future__ import annotations

from typing import Any

import pytest

from enclave.plan.facts import host_facts, upstream_version
from enclave.plan.preflight import Finding, HostSettings, preflight
from enclave.plan.profiles import load_profile
from tests.unit.recorded_facts import h200_node, host

NODE = ("enclave_nodes",)
GATEWAY = ("enclave_gateway", "enclave_staging")
NETWORK = "10.40.0.0/24"


def run(hosts: dict[str, tuple[dict[str, Any], tuple[str, ...]]], *, model: str = "deepseek-v4-flash",
        **settings: Any) -> list[Finding]:
    facts = {name: host_facts(name, raw) for name, (raw, _) in hosts.items()}
    conf = {name: HostSettings(groups=groups, private_network=NETWORK, **settings)
            for name, (_, groups) in hosts.items()}
    return preflight(facts, conf, load_profile(model))


def by(findings: list[Finding], severity: str) -> list[Finding]:
    return [f for f in findings if f.severity == severity]


def h200_cluster(**node2: Any) -> dict[str, tuple[dict[str, Any], tuple[str, ...]]]:
    node2 = {"address": "10.40.0.12/24", **node2}
    return {"gpu01": (h200_node("10.40.0.11/24"), NODE), "gpu02": (h200_node(**node2), NODE),
            "gw01": (host(address="10.40.0.10/24", free_gb=500), GATEWAY)}


def test_recorded_h200_cluster_is_ready_for_flash() -> None:
    findings = run(h200_cluster())
    assert by(findings, "error") == [] and by(findings, "warning") == []
    facts = host_facts("gpu01", h200_node("10.40.0.11/24"))
    assert (len(facts.gpus), facts.gpu_model, facts.gpu_memory_mib) == (8, "NVIDIA H200", 143771)
    assert (facts.driver_version, facts.fabricmanager_version, facts.nvswitches) == ("570.133.20", "570.133.20", 4)


def test_mixed_gpu_models_are_refused() -> None:
    findings = run(h200_cluster(summary="h100x8-default-table-565.txt", module_version="565.57.01",
                                packages={"nvidia-driver-565-open": "565.57.01-0ubuntu1",
                                          "nvidia-fabricmanager-565": "565.57.01-1"}))
    [mixed] = [f for f in by(findings, "error") if f.check == "mixed-gpus"]
    assert "gpu01: NVIDIA H200" in mixed.message and "gpu02: NVIDIA H100 80GB HBM3" in mixed.message
    assert any(f.check == "driver" and "differ" in f.message for f in by(findings, "warning"))


def test_fabric_manager_at_another_version_is_refused() -> None:
    findings = run(h200_cluster(packages={"nvidia-driver-570-server-open": "570.133.20-0ubuntu0.24.04.1",
                                          "nvidia-fabricmanager-570": "570.124.06-1"}))
    [error] = by(findings, "error")
    assert error.host == "gpu02" and error.check == "fabricmanager"
    assert "570.133.20" in error.message and "570.124.06" in error.message


def test_nvswitch_without_fabric_manager_is_refused() -> None:
    findings = run(h200_cluster(packages={"nvidia-driver-570-server-open": "570.133.20-0ubuntu0.24.04.1"}))
    [error] = by(findings, "error")
    assert error.check == "fabricmanager" and "no nvidia-fabricmanager" in error.message


def test_too_little_disk_for_two_revisions() -> None:
    findings = run(h200_cluster(free_gb=300))
    [error] = by(findings, "error")
    assert error.host == "gpu02" and error.check == "disk"
    assert "300 GB free" in error.message and "352 GB" in error.message


def test_staging_host_needs_room_too() -> None:
    hosts = h200_cluster()
    hosts["gw01"] = (host(address="10.40.0.10/24", free_gb=100), GATEWAY)
    [error] = by(run(hosts), "error")
    assert error.host == "gw01" and error.check == "disk"


def test_host_outside_the_private_network_is_refused() -> None:
    findings = run(h200_cluster(address="192.168.7.12/24"))
    [error] = by(findings, "error")
    assert error.host == "gpu02" and error.check == "network"
    assert "10.40.0.0/24" in error.message and "192.168.7.12/24" in error.message


@pytest.mark.parametrize(("name", "code_text"), [
    ("nvml-mismatch-570.txt", "reboot the host"),
    ("driver-not-loaded.txt", "kernel module is not loaded"),
    ("no-devices-found.txt", "wrong kernel module flavour"),
])
def test_nvidia_smi_failures_refuse_with_the_cause(name: str, code_text: str) -> None:
    findings = run(h200_cluster(summary=name, query=name, rc=9))
    [error] = [f for f in by(findings, "error") if f.check == "driver"]
    assert error.host == "gpu02" and code_text in error.message


def test_installed_driver_newer_than_the_loaded_module_needs_a_reboot() -> None:
    findings = run(h200_cluster(module_version="570.124.06"))
    [error] = by(findings, "error")
    assert error.check == "reboot" and "570.133.20 is installed but 570.124.06 is loaded" in error.message


def test_reboot_marker_is_a_warning() -> None:
    findings = run(h200_cluster(reboot_required=True))
    assert [f.check for f in by(findings, "warning")] == ["reboot"]


def test_pascal_with_the_open_module_is_refused() -> None:
    hosts = {"old": (host(gpus=1, summary="p100-default-table-470-legacy.txt", address="10.40.0.20/24",
                          module_version="470.82.01"), NODE),
             "gw01": (host(address="10.40.0.10/24"), GATEWAY)}
    errors = by(run(hosts, model="sandbox-tiny"), "error")
    assert [f.check for f in errors] == ["kernel-module"]
    assert "P100" in errors[0].message and "proprietary" in errors[0].message
    assert by(run(hosts, model="sandbox-tiny", kernel_module="proprietary"), "error") == []


def test_one_a100_40gb_is_too_small_for_flash() -> None:
    hosts = {"a100": (host(gpus=1, summary="a100-40gb-default-table-550.txt", module_version="550.144.03",
                           address="10.40.0.21/24"), NODE),
             "gw01": (host(address="10.40.0.10/24"), GATEWAY)}
    [error] = by(run(hosts), "error")
    assert error.check == "capacity" and "43 GB" in error.message and "170 GB" in error.message


def test_gpus_without_a_driver_yet_are_fine_and_say_what_deploy_does() -> None:
    hosts = {"new": (host(gpus=8, nvswitches=4, address="10.40.0.22/24"), NODE),
             "gw01": (host(address="10.40.0.10/24"), GATEWAY)}
    findings = run(hosts)
    assert by(findings, "error") == []
    messages = " ".join(f.message for f in by(findings, "info"))
    assert "deploy installs driver branch 580" in messages
    assert "nvidia-fabricmanager at the driver's exact version" in messages


@pytest.mark.parametrize(("gpu", "pci", "severity", "text"), [
    ("none", 0, "skip", "enclave_gpu: none"),
    ("none", 8, "skip", "enclave_gpu: none"),
    ("auto", 0, "skip", "no NVIDIA GPU on the PCI bus"),
    ("nvidia", 0, "error", "shows no NVIDIA GPU"),
])
def test_gpu_mode_decisions(gpu: str, pci: int, severity: str, text: str) -> None:
    hosts = {"n": (host(gpus=pci, address="10.40.0.23/24"), NODE)}
    [finding] = [f for f in run(hosts, model="sandbox-tiny", gpu=gpu) if f.check == "gpu"]
    assert finding.severity == severity and text in finding.message


def test_gateway_without_gpus_is_not_checked_for_them() -> None:
    findings = run(h200_cluster())
    assert not [f for f in findings if f.host == "gw01"]


@pytest.mark.parametrize(("package", "upstream"), [
    ("570.133.20-0ubuntu0.24.04.1", "570.133.20"), ("1:580.95.05-1", "580.95.05"), ("535.247.01-1~deb12u1",
                                                                                    "535.247.01")])
def test_upstream_version(package: str, upstream: str) -> None:
    assert upstream_version(package) == upstream
