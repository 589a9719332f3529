#!/usr/bin/python
"""Ansible module: read what planning needs from a host, raw, in one round trip.

It only reads (never changes anything) and returns the tools' own output unparsed where parsing is a
decision (nvidia-smi): the controller parses it (enclave.plan), where it is unit-tested against recorded
real outputs. Cheap structural facts (PCI devices, memory, addresses, disk) are returned parsed.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: enclave_host_facts
short_description: Read GPU, driver, memory, disk and network facts for enclave planning
description:
  - Lists NVIDIA GPUs and NVSwitches on the PCI bus (works before any driver is installed), runs
    nvidia-smi when present and returns its output unparsed, reads the loaded kernel module's version,
    installed NVIDIA package versions, memory, free disk space at the weights path and IPv4 addresses.
  - Changes nothing on the host.
options:
  models_dir:
    description: Where model weights live; free space is read at its nearest existing parent.
    type: path
    required: true
author: enclave developers
"""

RETURN = r"""
ansible_facts:
  description: C(enclave_host) with keys pci, nvidia_smi, driver, packages, memory_mb, disk, interfaces, reboot_required.
  returned: always
  type: dict
"""

import json
import os
import shutil

from ansible.module_utils.basic import AnsibleModule

NVIDIA_VENDOR = "0x10de"
# PCI classes: 0x0300 VGA, 0x0302 3D controller (datacenter GPUs); 0x0680 "other bridge" (NVSwitch).
GPU_CLASSES = ("0x0300", "0x0302")
NVSWITCH_CLASS = "0x0680"
QUERY_FIELDS = "index,name,uuid,pci.bus_id,memory.total,driver_version,persistence_mode"
PACKAGE_PATTERNS = ("nvidia-driver*", "nvidia-open*", "cuda-drivers*", "nvidia-fabricmanager*",
                    "nvidia-kernel-*", "nvidia-dkms-*", "nvidia-utils-*", "libnvidia-compute*", "nvidia-persistenced")


def _read(path):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def pci_devices():
    gpus, nvswitches = [], 0
    base = "/sys/bus/pci/devices"
    for slot in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        if _read(os.path.join(base, slot, "vendor")) != NVIDIA_VENDOR:
            continue
        cls = (_read(os.path.join(base, slot, "class")) or "")[:6]
        device = _read(os.path.join(base, slot, "device"))
        if cls in GPU_CLASSES:
            gpus.append({"slot": slot, "device": device, "class": cls})
        elif cls == NVSWITCH_CLASS:
            nvswitches += 1
    return {"gpus": gpus, "nvswitches": nvswitches}


def run_tool(module, args):
    if not module.get_bin_path(args[0]):
        return {"present": False}
    rc, out, err = module.run_command(args, environ_update={"LC_ALL": "C"})
    return {"present": True, "rc": rc, "stdout": out, "stderr": err}


def installed_packages(module):
    if not module.get_bin_path("dpkg-query"):
        return {}
    rc, out, _ = module.run_command(["dpkg-query", "-W", "-f", "${Package}\t${Status}\t${Version}\n",
                                     *PACKAGE_PATTERNS])
    found = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1].endswith(" installed"):
            found[parts[0]] = parts[2]
    return found


def memory_mb():
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return None


def disk_at(path):
    probe = path
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe.rstrip("/")) or "/"
    usage = shutil.disk_usage(probe)
    return {"path": path, "measured_at": probe, "free_bytes": usage.free, "total_bytes": usage.total}


def interfaces(module):
    rc, out, _ = module.run_command(["ip", "-j", "-4", "addr", "show"])
    if rc != 0:
        return []
    result = []
    for link in json.loads(out or "[]"):
        addresses = [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", []) if a.get("local")]
        if link.get("ifname") != "lo" and addresses:
            result.append({"name": link["ifname"], "addresses": addresses,
                           "operstate": link.get("operstate", "UNKNOWN")})
    return result


def main():
    module = AnsibleModule(argument_spec={"models_dir": {"type": "path", "required": True}},
                           supports_check_mode=True)
    facts = {
        "pci": pci_devices(),
        "nvidia_smi": {
            "query": run_tool(module, ["nvidia-smi", f"--query-gpu={QUERY_FIELDS}", "--format=csv"]),
            "summary": run_tool(module, ["nvidia-smi"]),
        },
        "driver": {"proc_version": _read("/proc/driver/nvidia/version"),
                   "module_version": _read("/sys/module/nvidia/version")},
        "packages": installed_packages(module),
        "memory_mb": memory_mb(),
        "disk": disk_at(module.params["models_dir"]),
        "interfaces": interfaces(module),
        "reboot_required": os.path.exists("/run/reboot-required"),
        "reboot_required_packages": (_read("/run/reboot-required.pkgs") or "").split(),
    }
    module.exit_json(changed=False, ansible_facts={"enclave_host": facts})


if __name__ == "__main__":
    main()
