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


# Mitogen's strategy runs each host's tasks in one Python interpreter kept on the host for the whole run, instead of
# a new SSH command and module upload per task: the playbook of a no-op `enclave deploy` over the sandbox's three
# hosts took 62 s with Ansible's linear strategy and 29 s with it, the same per-task results. It ships as a Python
# package whose strategy plugins live beside its code, a path ansible.cfg cannot name; the environment points
# Ansible at it.
STRATEGY = "mitogen_linear"


def strategy_env() -> dict[str, str]:
    """Mitogen's strategy, unless the operator chose one (ANSIBLE_STRATEGY=linear runs Ansible's own: the
    fallback when a host cannot run mitogen's interpreter, and what plain ansible-playbook from a checkout runs)."""
    if os.environ.get("ANSIBLE_STRATEGY"):
        return {}
    import ansible_mitogen  # a dependency of enclave; imported here only, where its path is needed

    plugins = Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"
    return {"ANSIBLE_STRATEGY_PLUGINS": str(plugins), "ANSIBLE_STRATEGY": STRATEGY}


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
        **strategy_env(),
        "ANSIBLE_CONFIG": str(paths.ansible_cfg()),
        # Runner and testinfra start `ansible-playbook` by name: from an unactivated venv it is not on PATH.
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        # ansible-runner turns host key checking off unless told; keep the operator's choice or the safe default.
        "ANSIBLE_HOST_KEY_CHECKING": os.environ.get("ANSIBLE_HOST_KEY_CHECKING", "True"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
    }
