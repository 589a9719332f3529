"""What the sandbox gives the engine role: the CPU wheelhouse served to the nodes, its lock's pin, and a generated
API key.

Both land in the sandbox inventory's group_vars/all/engine.yml (mode 0600, the key is a secret), where an
operator's inventory would keep them (the key in Ansible Vault).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

import yaml

from enclave.engine.build import SANDBOX_BUILD
from enclave.engine.wheelhouse import Wheelhouse
from enclave.hashing import sha256_file

VARS_FILE = "engine.yml"


def ensure_served_wheelhouse(cache_root: Path, served_dir: Path, report: Callable[[str], None]) -> str:
    """Build (once) the sandbox's engine wheelhouse and link it into the directory the controller serves;
    returns its name, the path under the served directory's URL."""
    house = Wheelhouse(cache_root / "wheelhouse", SANDBOX_BUILD)
    if not house.ready():
        report(f"building the engine wheelhouse {SANDBOX_BUILD.name} (once, about a minute)")
    path = house.ensure(report)
    link = served_dir / SANDBOX_BUILD.name
    served_dir.mkdir(parents=True, exist_ok=True)
    if not (link.is_symlink() and link.resolve() == path.resolve()):
        tmp = link.with_name(link.name + ".tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(path)
        tmp.replace(link)
    return SANDBOX_BUILD.name


def served_lock_sha256(cache_root: Path) -> str:
    """sha256 of the sandbox wheelhouse's requirements.txt, read from the controller's own copy (the one it built),
    never from the wheel server: the pin the nodes check the served lock against."""
    return sha256_file(Wheelhouse(cache_root / "wheelhouse", SANDBOX_BUILD).path / "requirements.txt")


def write_engine_vars(inventory_dir: Path, wheelhouse_url: str | None, lock_sha256: str | None) -> Path:
    """group_vars/all/engine.yml: the wheelhouse URL, its lock's pinned sha256, and an API key, generated once and
    kept across `up`s. Without a URL (a sandbox on an offline site kit) only the key: the kit import names the
    wheelhouse, and a second setting here would override it."""
    path = inventory_dir / "group_vars" / "all" / VARS_FILE
    current = yaml.safe_load(path.read_text()) if path.is_file() else None
    key = (current or {}).get("engine_api_key") or secrets.token_urlsafe(32)
    values = ({"engine_wheelhouse_url": wheelhouse_url, "engine_wheelhouse_lock_sha256": lock_sha256}
              if wheelhouse_url else {})
    text = ("# Written by `enclave sandbox up`: where the nodes install vLLM from, the sha256 of the lock they\n"
            "# install (the sandbox built the wheelhouse), and the engine's API key (generated once; on real hosts\n"
            "# keep the key in Ansible Vault).\n"
            + yaml.safe_dump({**values, "engine_api_key": key}, sort_keys=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.read_text() == text:
        return path
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.with_suffix(".tmp").replace(path)
    return path
