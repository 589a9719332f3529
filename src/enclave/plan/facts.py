"""Host facts for planning, from the raw output of the `enclave_host_facts` module."""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from enclave.plan.nvidia_smi import Gpu, SmiReading, reading

_DRIVER_PACKAGES = ("nvidia-driver", "nvidia-open", "cuda-drivers", "nvidia-driver-cuda", "libnvidia-compute")


@dataclass(frozen=True)
class HostFacts:
    name: str
    pci_gpus: int
    nvswitches: int
    smi: SmiReading | None  # None: nvidia-smi not installed
    loaded_module_version: str | None
    packages: dict[str, str]
    memory_mb: int | None
    disk_path: str | None
    disk_free_bytes: int | None
    interfaces: list[dict[str, Any]] = field(default_factory=list)
    reboot_required: bool = False
    pci_devices: tuple[str, ...] = ()  # PCI device ids of the NVIDIA GPUs ("0x2335"): known before any driver

    @property
    def gpus(self) -> tuple[Gpu, ...]:
        return self.smi.gpus if self.smi else ()

    @property
    def gpu_model(self) -> str | None:
        names = Counter(g.name for g in self.gpus)
        return ", ".join(sorted(names)) if names else None

    @property
    def gpu_memory_mib(self) -> int | None:
        sizes = {g.memory_mib for g in self.gpus if g.memory_mib}
        return min(sizes) if sizes else None

    @property
    def driver_version(self) -> str | None:
        return (self.smi.driver_version if self.smi else None) or self.loaded_module_version

    @property
    def fabricmanager_version(self) -> str | None:
        for name, version in sorted(self.packages.items()):
            if name.startswith("nvidia-fabricmanager"):
                return upstream_version(version)
        return None

    @property
    def installed_driver_version(self) -> str | None:
        for prefix in _DRIVER_PACKAGES:
            for name, version in sorted(self.packages.items()):
                if name == prefix or name.startswith(prefix + "-"):
                    return upstream_version(version)
        return None

    def addresses_in(self, network: ipaddress.IPv4Network) -> list[tuple[str, str]]:
        found = []
        for nic in self.interfaces:
            for cidr in nic.get("addresses", []):
                if ipaddress.ip_interface(cidr).ip in network:
                    found.append((nic["name"], cidr.split("/")[0]))
        return found


def upstream_version(package_version: str) -> str:
    """'1:580.95.05-1ubuntu1' -> '580.95.05': the driver's own version inside a Debian package version."""
    version = package_version.split(":", 1)[-1]
    return version.split("-", 1)[0]


def host_facts(name: str, raw: dict[str, Any]) -> HostFacts:
    pci = raw.get("pci") or {}
    smi = raw.get("nvidia_smi") or {}
    disk = raw.get("disk") or {}
    driver = raw.get("driver") or {}
    return HostFacts(
        name=name,
        pci_gpus=len(pci.get("gpus") or []),
        nvswitches=int(pci.get("nvswitches") or 0),
        smi=reading(smi.get("query"), smi.get("summary")),
        loaded_module_version=driver.get("module_version"),
        packages=dict(raw.get("packages") or {}),
        memory_mb=raw.get("memory_mb"),
        disk_path=disk.get("path"),
        disk_free_bytes=disk.get("free_bytes"),
        interfaces=list(raw.get("interfaces") or []),
        reboot_required=bool(raw.get("reboot_required")),
        pci_devices=tuple(str(g.get("device", "")).lower() for g in pci.get("gpus") or []),
    )
