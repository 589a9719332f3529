"""Where enclave finds its shipped files and keeps its state.

The Ansible side (playbooks/, templates/, inventory/, ansible.cfg) sits at the top of a checkout and is carried
inside the wheel under `enclave/share/`; `share_dir()` finds either, so an installed `enclave` needs no checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

from enclave.errors import EnclaveError

_PACKAGE_DIR = Path(__file__).resolve().parent


def share_dir() -> Path:
    packaged = _PACKAGE_DIR / "share"
    if (packaged / "playbooks" / "site.yml").is_file():
        return packaged
    checkout = _PACKAGE_DIR.parents[1]
    if (checkout / "playbooks" / "site.yml").is_file():
        return checkout
    raise EnclaveError(
        f"cannot find the shipped playbooks: neither {packaged}/playbooks nor {checkout}/playbooks exists; "
        "reinstall llm-enclave"
    )


def playbooks_dir() -> Path:
    return share_dir() / "playbooks"


def roles_dir() -> Path:
    return playbooks_dir() / "roles"


def ansible_cfg() -> Path:
    return share_dir() / "ansible.cfg"


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def state_dir() -> Path:
    """Runs, sandbox state, keys: `$ENCLAVE_STATE_DIR`, else `$XDG_STATE_HOME/enclave`."""
    override = os.environ.get("ENCLAVE_STATE_DIR")
    return Path(override) if override else _xdg("XDG_STATE_HOME", ".local/state") / "enclave"


def cache_dir() -> Path:
    """Rebuildable downloads (node base image, package repository): `$ENCLAVE_CACHE_DIR`, else XDG cache."""
    override = os.environ.get("ENCLAVE_CACHE_DIR")
    return Path(override) if override else _xdg("XDG_CACHE_HOME", ".cache") / "enclave"


def audit_log() -> Path:
    """The controller's audit trail (enclave.audit): one JSON line per state-changing verb, in a 0700 directory."""
    return state_dir() / "audit" / "audit.jsonl"
