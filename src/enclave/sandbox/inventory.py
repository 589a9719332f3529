"""The inventory `sandbox up` writes: the same shape an operator writes for real hosts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from enclave.sandbox.hub import HUB_PORT, WHEELS_PORT
from enclave.sandbox.services import PACKAGE_PORT
from enclave.sandbox.spec import SandboxSpec

# Where Alertmanager posts alerts: the controller's bridge address, on a port the integration tests listen on while
# they watch for an alert (nobody listens otherwise: Alertmanager retries and logs, nothing else happens).
WEBHOOK_PORT = 8819


class _LiteralDumper(yaml.SafeDumper):
    """Multi-line strings (the mirror's signing key) as readable `|` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _str)


def render(spec: SandboxSpec, *, private_key: Path, known_hosts: Path, repo_public_key: str | None,
           model_revision: str, hub_client_lock_sha256: str | None) -> str:
    """The inventory; with repo_public_key None (a sandbox on an offline site kit) it names no package, wheel or
    weights source: `enclave kit import` writes those, pointing at the kit the staging host serves."""
    controller = str(spec.controller_address)
    groups: dict[str, dict[str, Any]] = {}
    for host in spec.hosts:
        for group in host.groups:
            groups.setdefault(group, {"hosts": {}})["hosts"][host.name] = {"ansible_host": str(host.address)}
    inventory = {
        "all": {
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(private_key),
                # Host keys are pinned: the sandbox generated them and wrote known_hosts itself.
                "ansible_ssh_common_args": f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes",
                "ansible_python_interpreter": "/usr/bin/python3",
                "enclave_private_network": str(spec.network),
                # Sandbox hosts have no GPU: the NVIDIA stack is skipped and says so.
                "enclave_gpu": "none",
                "enclave_model": "sandbox-tiny",
                "base_ntp_servers": [controller],
                "enclave_model_revision": model_revision,
                # A stop that meets an engine's start (vLLM ignores SIGTERM during part of it) is killed after
                # 15 s, not the role's 60: the tiny model stops cleanly in about a second.
                "engine_stop_timeout_s": 15,
                # Monitoring at a pace a test can watch (an engine-down alert within seconds, not minutes) and a
                # disk-sized retention; a real site keeps the role's defaults.
                "monitoring_scrape_interval": "5s",
                "monitoring_evaluation_interval": "5s",
                "monitoring_alert_engine_down_for": "15s",
                "monitoring_group_wait": "5s",
                "monitoring_group_interval": "10s",
                "monitoring_retention_time": "2d",
                "monitoring_retention_size_gb": 1,
                "monitoring_signals_interval": "10s",
                "monitoring_webhook_urls": [f"http://{controller}:{WEBHOOK_PORT}/alerts"],
            },
            "children": groups,
        }
    }
    if repo_public_key is not None:
        inventory["all"]["vars"].update(sandbox_sources(controller, repo_public_key, hub_client_lock_sha256 or ""))
    header = (f"# Written by `enclave sandbox up` for sandbox {spec.name!r}; rewritten on every up.\n"
              "# Copy it to start an inventory for real hosts: only addresses, user and sources differ.\n")
    return header + yaml.dump(inventory, Dumper=_LiteralDumper, sort_keys=False, default_flow_style=False)


def sandbox_sources(controller: str, repo_public_key: str, hub_client_lock_sha256: str) -> dict[str, Any]:
    """The sandbox's own stand-ins for a site's mirrors, served by the controller."""
    return {
        "enclave_apt_sources_exclusive": True,
        "enclave_apt_sources": [{
            "name": "sandbox",
            "uris": [f"http://{controller}:{PACKAGE_PORT}/"],
            "suites": ["./"],
            "key": repo_public_key,
        }],
        # The tiny model as the controller's hub mirror published it, fetched by the staging host with the real
        # huggingface_hub client from the controller's wheelhouse.
        "weights_source": {"type": "hf", "endpoint": f"http://{controller}:{HUB_PORT}"},
        "weights_hub_client_find_links": f"http://{controller}:{WHEELS_PORT}/hub-client/",
        # The sandbox made the client's lock, so it knows the digest to pin (docs/security.md).
        "weights_hub_client_lock_sha256": hub_client_lock_sha256,
    }
