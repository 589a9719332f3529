"""An inventory as Ansible reads it (`ansible-inventory --list`), whether its hosts answer SSH, and validate():
the pure checks of enclave.plan.inventory around those two, the gate every verb passes before touching a host."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from enclave import paths
from enclave.ansible_env import ansible_env
from enclave.errors import InventoryError
from enclave.plan.inventory import (
    Inventory,
    check_extra_vars,
    collect_variables,
    inventory_from_listing,
    ssh_targets,
    static_problems,
)
from enclave.plan.known_vars import KnownVars, load_known_vars
from enclave.ssh_probe import probe_ssh


def ansible_inventory(path: Path, vault_password_file: Path | None = None) -> Inventory:
    env = {**os.environ, **ansible_env(path),
           # Without these, an unreadable source is a warning and an empty inventory.
           "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True", "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True"}
    argv = ["ansible-inventory", "-i", str(path), "--list"]
    if vault_password_file is not None:  # vaulted group_vars, as docs/security.md recommends
        argv += ["--vault-password-file", str(vault_password_file)]
    try:
        # stdin from /dev/null: Ansible refuses a non-blocking stdin, and the one enclave was started with may be
        # (an ssh run earlier from the same terminal or CI job leaves the shared descriptor O_NONBLOCK).
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InventoryError(f"{path}: ansible-inventory could not run: {exc}") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        said = [ln for ln in lines if "ERROR" in ln or "Unable to parse" in ln] or lines[-3:]
        raise InventoryError(f"{path}: Ansible cannot read this inventory", said)
    return inventory_from_listing(path, json.loads(proc.stdout))


def check_reachable(inventory: Inventory, timeout: float = 5.0) -> list[str]:
    targets = ssh_targets(inventory)
    with ThreadPoolExecutor(max_workers=min(32, len(targets) or 1)) as pool:
        answers = list(pool.map(lambda t: probe_ssh(t[1], t[2], timeout), targets))
    return [f"host '{host}' ({address}:{port}) is unreachable: {why}"
            for (host, address, port), why in zip(targets, answers, strict=True) if why]


def validate(path: Path, *, reachable: bool = True, known: KnownVars | None = None,
             vault_password_file: Path | None = None, extra_vars: dict[str, Any] | None = None,
             required: Collection[str] = ()) -> Inventory:
    """Everything that can be known about an inventory without touching a host (and an SSH probe).

    `extra_vars` (the run's `-e`) are checked like inventory variables and count for `required`: the roles (of
    engine, gateway, weights) whose must-have settings the run needs (enclave.plan.settings)."""
    path = path.expanduser().resolve()
    if not path.exists():
        raise InventoryError(f"{path}: no such inventory file or directory")
    known = known or load_known_vars(paths.roles_dir())
    if extra_vars:
        check_extra_vars(extra_vars, known)
    found = collect_variables(path)
    inventory = ansible_inventory(path, vault_password_file and vault_password_file.expanduser().resolve())
    problems = static_problems(inventory, found, known, extra_vars or {}, required)
    if problems:
        raise InventoryError(f"{path}: the inventory has {len(problems)} problem(s)", problems)
    if reachable:
        unreachable = check_reachable(inventory)
        if unreachable:
            raise InventoryError(f"{path}: {len(unreachable)} host(s) do not answer SSH; nothing was changed",
                                 unreachable)
    return inventory
