"""nvidia: the branch pin on every inference node, and the driver stack where GPUs are."""

from __future__ import annotations

from typing import Any

import pytest

from enclave.checks.settings import render

testinfra_hosts = ["ansible://enclave_nodes"]


def _pci_count(host: Any, *classes: str) -> int:
    """NVIDIA devices of the given PCI classes (0x0300/0x0302 GPUs, 0x0680 NVSwitches)."""
    wanted = " ".join(classes)
    script = ("n=0; for d in /sys/bus/pci/devices/*; do [ \"$(cat $d/vendor)\" = 0x10de ] || continue; "
              f"c=$(cut -c1-6 $d/class); for w in {wanted}; do [ \"$c\" = \"$w\" ] && n=$((n+1)); done; done; echo $n")
    return int(host.run(script).stdout.strip() or 0)


def _gpus(host: Any) -> int:
    return _pci_count(host, "0x0300", "0x0302")


def _require_gpus(host: Any, settings: dict[str, Any]) -> None:
    if settings["enclave_gpu"] == "none":
        pytest.skip("the inventory sets enclave_gpu: none")
    if _gpus(host) == 0:
        pytest.skip("no NVIDIA device on the PCI bus")


def test_driver_branch_pin(host: Any, settings: dict[str, Any]) -> None:
    pin = host.file("/etc/apt/preferences.d/enclave-nvidia.pref")
    assert pin.exists, "the driver branch pin /etc/apt/preferences.d/enclave-nvidia.pref is missing"
    assert f"{settings['nvidia_driver_branch']}" in pin.content_string, "the pin names another branch"
    blacklist = host.run("apt-config dump Unattended-Upgrade::Package-Blacklist").stdout
    assert "nvidia-" in blacklist, "unattended upgrades may touch the driver (51enclave-nvidia is missing)"


def test_driver_loaded(host: Any, settings: dict[str, Any]) -> None:
    _require_gpus(host, settings)
    smi = host.run("nvidia-smi --query-gpu=name,memory.total,persistence_mode --format=csv,noheader")
    assert smi.rc == 0, f"nvidia-smi failed: {(smi.stdout + smi.stderr).strip()[:300]}"
    lines = [ln for ln in smi.stdout.splitlines() if ln.strip()]
    assert len(lines) == _gpus(host), f"nvidia-smi sees {len(lines)} GPUs, the PCI bus has {_gpus(host)}"
    if settings["nvidia_persistence_mode"]:
        assert all(ln.rsplit(",", 1)[1].strip() == "Enabled" for ln in lines), "persistence mode is off"


def test_no_pending_reboot(host: Any, settings: dict[str, Any]) -> None:
    _require_gpus(host, settings)
    assert not host.file("/run/reboot-required").exists, "reboot required: " + host.file(
        "/run/reboot-required").content_string.strip()


def test_fabric_manager(host: Any, settings: dict[str, Any]) -> None:
    _require_gpus(host, settings)
    if _pci_count(host, "0x0680") == 0 and str(settings["nvidia_fabricmanager"]).lower() != "true":
        pytest.skip("no NVSwitch on the PCI bus")
    assert host.service("nvidia-fabricmanager").is_running, "nvidia-fabricmanager is not running"
    package = render(settings["nvidia_fabricmanager_package"], settings)
    assert host.package(package).is_installed, f"{package} is not installed"
