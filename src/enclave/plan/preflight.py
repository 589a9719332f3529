"""Preflight: what the gathered facts say about the cluster before anything is installed or started.

Each decision is a Finding with a severity: `error` refuses the deploy, `warning` is shown, `skip` says what
will not run on a host and why, `info` says what deploy will do about a gap it can fill itself.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from enclave.plan.facts import HostFacts
from enclave.plan.profiles import ModelProfile

DISK_MARGIN = 0.10  # beyond two revisions: partial downloads, manifests, filesystem slack
# GPUs the open kernel module does not drive (Maxwell, Pascal, Volta); Turing and later work with it.
_PRE_TURING = re.compile(r"\b(V100S?|TITAN V|P100|P40|P6|P4|GTX 10\d\d|TITAN Xp?|M10|M40|M60|K80|K40)\b")


@dataclass(frozen=True)
class Finding:
    severity: str  # error | warning | skip | info
    check: str
    message: str
    host: str | None = None


@dataclass(frozen=True)
class HostSettings:
    """The inventory's view of one host, with the roles' defaults filled in."""

    gpu: str = "auto"  # enclave_gpu: auto | nvidia | none
    driver_branch: str = "580"
    kernel_module: str = "open"
    private_network: str = ""
    groups: tuple[str, ...] = ()

    @classmethod
    def from_vars(cls, hostvars: Mapping[str, Any], groups: tuple[str, ...]) -> HostSettings:
        return cls(gpu=str(hostvars.get("enclave_gpu", cls.gpu)),
                   driver_branch=str(hostvars.get("nvidia_driver_branch", cls.driver_branch)),
                   kernel_module=str(hostvars.get("nvidia_kernel_module", cls.kernel_module)),
                   private_network=str(hostvars.get("enclave_private_network", "")), groups=groups)


def _gb(value: float) -> str:
    return f"{value / 1e9:,.0f} GB" if value >= 1e9 else f"{value / 1e6:,.1f} MB"


def check_gpus(facts: HostFacts, settings: HostSettings) -> list[Finding]:
    host = facts.name
    if settings.gpu == "none":
        return [Finding("skip", "gpu", "GPU checks and the NVIDIA stack skipped: the inventory sets "
                                       "enclave_gpu: none", host)]
    if facts.pci_gpus == 0:
        if settings.gpu == "nvidia":
            return [Finding("error", "gpu", "the inventory sets enclave_gpu: nvidia but the PCI bus shows no "
                                            "NVIDIA GPU", host)]
        return [Finding("skip", "gpu", "no NVIDIA GPU on the PCI bus: driver, fabric manager and persistence "
                                       "mode skipped (set enclave_gpu: none to say so in the inventory)", host)]
    found: list[Finding] = []
    if facts.smi is None:
        found.append(Finding("info", "driver", f"{facts.pci_gpus} NVIDIA GPU(s) and no driver yet: deploy installs "
                                               f"driver branch {settings.driver_branch}", host))
    elif facts.smi.failure is not None:
        failure = facts.smi.failure
        found.append(Finding("error", "driver", f"nvidia-smi: {failure.message} ({failure.hint})", host))
    else:
        if len(facts.gpus) != facts.pci_gpus:
            found.append(Finding("warning", "gpu", f"nvidia-smi sees {len(facts.gpus)} GPU(s) but the PCI bus has "
                                                   f"{facts.pci_gpus}: a GPU may have fallen off the bus", host))
        branch = (facts.driver_version or "").split(".")[0]
        if branch and branch != settings.driver_branch:
            found.append(Finding("info", "driver", f"driver {facts.driver_version} is installed; deploy moves it "
                                                   f"to branch {settings.driver_branch}", host))
    old = sorted({g.name for g in facts.gpus if _PRE_TURING.search(g.name)})
    if old and settings.kernel_module == "open":
        found.append(Finding("error", "kernel-module", f"{', '.join(old)} need the proprietary kernel module; "
                                                       "set nvidia_kernel_module: proprietary", host))
    found += check_fabricmanager(facts)
    installed, loaded = facts.installed_driver_version, facts.loaded_module_version
    if installed and loaded and installed != loaded:
        found.append(Finding("error", "reboot", f"driver {installed} is installed but {loaded} is loaded: "
                                                "reboot required", host))
    return found


def check_fabricmanager(facts: HostFacts) -> list[Finding]:
    if facts.nvswitches == 0:
        return []
    driver = facts.installed_driver_version or facts.driver_version
    manager = facts.fabricmanager_version
    if driver is None:
        return [Finding("info", "fabricmanager", f"{facts.nvswitches} NVSwitch(es): deploy installs "
                                                 "nvidia-fabricmanager at the driver's exact version", facts.name)]
    if manager is None:
        return [Finding("error", "fabricmanager", f"{facts.nvswitches} NVSwitch(es) but no nvidia-fabricmanager: "
                                                  "CUDA cannot use the GPUs until it runs", facts.name)]
    if manager != driver:
        return [Finding("error", "fabricmanager", f"driver {driver} but nvidia-fabricmanager {manager}: they must "
                                                  "be the same version or the fabric manager will not start",
                        facts.name)]
    return []


def check_disk(facts: HostFacts, profile: ModelProfile) -> list[Finding]:
    need = profile.size_bytes * 2 * (1 + DISK_MARGIN)
    if facts.disk_free_bytes is None:
        return [Finding("warning", "disk", "free disk space at the weights path is unknown", facts.name)]
    if facts.disk_free_bytes < need:
        return [Finding("error", "disk", f"{_gb(facts.disk_free_bytes)} free at {facts.disk_path}; two revisions "
                                         f"of {profile.name} need {_gb(need)}", facts.name)]
    return []


def check_network(facts: HostFacts, settings: HostSettings) -> list[Finding]:
    try:
        network = ipaddress.IPv4Network(settings.private_network, strict=False)
    except ValueError:
        return [Finding("error", "network", f"enclave_private_network {settings.private_network!r} is not an "
                                            "IPv4 network", facts.name)]
    if not facts.addresses_in(network):
        seen = ", ".join(a for nic in facts.interfaces for a in nic.get("addresses", [])) or "none"
        return [Finding("error", "network", f"no interface in the private network {network} (addresses: {seen})",
                        facts.name)]
    return []


def check_cluster(nodes: list[HostFacts], profile: ModelProfile) -> list[Finding]:
    found: list[Finding] = []
    with_gpus = [f for f in nodes if f.gpus]
    models = {f.name: f.gpu_model for f in with_gpus}
    if len(set(models.values())) > 1:
        detail = "; ".join(f"{host}: {model}" for host, model in sorted(models.items()))
        found.append(Finding("error", "mixed-gpus", f"mixed GPU models ({detail}); a replica needs identical GPUs: "
                                                    "split the inventory or limit the deploy"))
    drivers = {f.name: f.driver_version for f in with_gpus if f.driver_version}
    if len(set(drivers.values())) > 1:
        detail = ", ".join(f"{host} {version}" for host, version in sorted(drivers.items()))
        found.append(Finding("warning", "driver", f"driver versions differ ({detail}); deploy aligns them"))
    total_mib = sum(g.memory_mib or 0 for f in with_gpus for g in f.gpus)
    if with_gpus and total_mib * 2**20 < profile.min_gpu_memory_gb * 1e9:
        found.append(Finding("error", "capacity", f"{len(with_gpus)} node(s) hold {total_mib * 2**20 / 1e9:,.0f} GB "
                                                  f"of GPU memory; {profile.name} needs at least "
                                                  f"{profile.min_gpu_memory_gb:,.0f} GB"))
    return found


def preflight(facts: Mapping[str, HostFacts], settings: Mapping[str, HostSettings],
              profile: ModelProfile) -> list[Finding]:
    findings: list[Finding] = []
    nodes = [facts[h] for h in sorted(facts) if "enclave_nodes" in settings[h].groups]
    for name in sorted(facts):
        host, conf = facts[name], settings[name]
        if "enclave_nodes" in conf.groups:
            findings += check_gpus(host, conf)
        if {"enclave_nodes", "enclave_staging"} & set(conf.groups):
            findings += check_disk(host, profile)
        findings += check_network(host, conf)
        if host.reboot_required:
            findings.append(Finding("warning", "reboot", "the host asks for a reboot (/run/reboot-required)", name))
    return findings + check_cluster(nodes, profile)
