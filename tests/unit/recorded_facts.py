"""Raw host facts in the shape the enclave_host_facts module returns, with nvidia-smi parts taken verbatim
from outputs recorded on real machines (fixtures/nvidia-smi). The rest (PCI counts, packages, disk, NICs) is
set per test to describe the host around those recordings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SMI = Path(__file__).parent / "fixtures" / "nvidia-smi"


def smi_run(name: str | None, rc: int = 0) -> dict[str, Any]:
    if name is None:
        return {"present": False}
    return {"present": True, "rc": rc, "stdout": (SMI / name).read_text(), "stderr": ""}


def host(*, gpus: int = 0, nvswitches: int = 0, query: str | None = None, summary: str | None = None,
         rc: int = 0, packages: dict[str, str] | None = None, module_version: str | None = None,
         free_gb: float = 2000, address: str = "10.40.0.11/24", reboot_required: bool = False) -> dict[str, Any]:
    return {
        "pci": {"gpus": [{"slot": f"0000:{i:02x}:00.0", "device": "0x2335", "class": "0x0302"} for i in range(gpus)],
                "nvswitches": nvswitches},
        "nvidia_smi": {"query": smi_run(query, rc), "summary": smi_run(summary, rc)},
        "driver": {"proc_version": None, "module_version": module_version},
        "packages": packages or {},
        "memory_mb": 2 * 1024 * 1024,
        "disk": {"path": "/srv/enclave/models", "measured_at": "/srv", "free_bytes": int(free_gb * 1e9),
                 "total_bytes": int(4000e9)},
        "interfaces": [{"name": "bond0", "addresses": [address], "operstate": "UP"}],
        "reboot_required": reboot_required,
        "reboot_required_packages": [],
    }


def h200_node(address: str, **overrides: Any) -> dict[str, Any]:
    """An HGX H200 node as recorded (8 GPUs, driver 570.133.20) with its fabric manager in step."""
    settings: dict[str, Any] = {
        "gpus": 8, "nvswitches": 4, "summary": "h200x8-default-table-570.txt",
        "packages": {"nvidia-driver-570-server-open": "570.133.20-0ubuntu0.24.04.1",
                     "nvidia-fabricmanager-570": "570.133.20-1"},
        "module_version": "570.133.20", "address": address}
    settings.update(overrides)
    return host(**settings)
