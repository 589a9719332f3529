"""The environment enclave gives Ansible's own tools (ansible-playbook, ansible-inventory, testinfra)."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from enclave import paths, vault_password


def fact_cache_dir(inventory: Path) -> Path:
    """One fact cache per inventory: the cache is keyed by host name, and two inventories (two sandboxes, staging
    and production) may both have a `node1` whose facts must never stand in for the other's."""
    key = hashlib.sha256(str(inventory.expanduser().resolve()).encode()).hexdigest()[:16]
    return paths.cache_dir() / "ansible-facts" / key


def ansible_env(inventory: Path | None = None) -> dict[str, str]:
    """What Ansible needs beyond the caller's environment; nothing secret is added here (the vault password file's
    path, never its content)."""
    bin_dir = str(Path(sys.executable).parent)
    extra = {"ANSIBLE_CACHE_PLUGIN_CONNECTION": str(fact_cache_dir(inventory))} if inventory is not None else {}
    vault = vault_password.active()
    if vault is not None:
        extra["ANSIBLE_VAULT_PASSWORD_FILE"] = str(vault)
    return {
        **extra,
        "ANSIBLE_CONFIG": str(paths.ansible_cfg()),
        # Runner and testinfra start `ansible-playbook` by name: from an unactivated venv it is not on PATH.
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        # ansible-runner turns host key checking off unless told; keep the operator's choice or the safe default.
        "ANSIBLE_HOST_KEY_CHECKING": os.environ.get("ANSIBLE_HOST_KEY_CHECKING", "True"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
    }
