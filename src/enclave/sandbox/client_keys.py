"""The sandbox's gateway settings: client API keys, generated once per sandbox and kept across `up`s."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import yaml

VARS_FILE = "gateway.yml"
# Named clients, so the keys' names show in the gateway's access log and tests can tell them apart. The last one
# has a low rate (LIMITS), so the first deploy already shows a client over its limit refused while others are not.
CLIENTS = ("sandbox-demo", "sandbox-tests", "sandbox-limited")
LIMITS = {"sandbox-limited": {"rate": "1r/s", "burst": 2}}


def write_gateway_vars(inventory_dir: Path) -> Path:
    """group_vars/all/gateway.yml (0600): gateway_api_keys, one random key per client name, and the per-client
    limits (gateway_client_limits)."""
    path = inventory_dir / "group_vars" / "all" / VARS_FILE
    current = yaml.safe_load(path.read_text()) if path.is_file() else None
    keys = dict((current or {}).get("gateway_api_keys") or {})
    for client in CLIENTS:
        keys.setdefault(client, "enc-" + secrets.token_urlsafe(32))
    text = ("# Written by `enclave sandbox up`: the gateway's client API keys (generated once; on real hosts keep\n"
            "# them in Ansible Vault). Clients trust the kit's CA in ../../pki/ca.crt.\n"
            + yaml.safe_dump({"gateway_api_keys": keys}, sort_keys=False)
            + "# Per-client limits (docs/runbooks/gateway.md); every other client has the role's defaults.\n"
            + yaml.safe_dump({"gateway_client_limits": LIMITS}, sort_keys=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.read_text() == text:
        return path
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    tmp.replace(path)
    return path


def read_gateway_keys(inventory_dir: Path) -> dict[str, str]:
    path = inventory_dir / "group_vars" / "all" / VARS_FILE
    data = yaml.safe_load(path.read_text()) if path.is_file() else None
    return dict((data or {}).get("gateway_api_keys") or {})
