"""The sandbox's gateway settings: client API keys, generated once per sandbox and kept across `up`s."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import yaml

from enclave.gateway import keys

VARS_FILE = "gateway.yml"
# Named clients, so the keys' names show in the gateway's access log and tests can tell them apart. The last one
# has a low rate and a max_tokens cap (LIMITS), so the first deploy already shows a client over its limits refused
# while others are not.
CLIENTS = ("sandbox-demo", "sandbox-tests", "sandbox-limited")
LIMITS = {"sandbox-limited": {"rate": "1r/s", "burst": 2, "max_tokens": 16}}


def write_gateway_vars(inventory_dir: Path) -> Path:
    """group_vars/all/gateway.yml (0600): the per-client limits (gateway_client_limits); and the keys, one random
    key per client name, in the file `enclave keys` owns (group_vars/enclave_gateway/api_keys.yml), so the
    sandbox's keys can be rotated and revoked like an operator's. Keys an earlier sandbox kept in gateway.yml move
    there unchanged."""
    path = inventory_dir / "group_vars" / "all" / VARS_FILE
    current = yaml.safe_load(path.read_text()) if path.is_file() else None
    store = keys.KeyStore(inventory_dir, None)
    ring = store.read()
    earlier = dict((current or {}).get("gateway_api_keys") or {})
    now = datetime.now(UTC)
    for client in CLIENTS:
        if client not in ring.keys:
            if client in earlier:
                ring.keys[client] = earlier[client]
                ring.dates[client] = {"created": now.strftime("%Y-%m-%dT%H:%M:%SZ")}
            else:
                keys.add(ring, client, now)
    if ring != store.read():
        store.write(ring)
    text = ("# Written by `enclave sandbox up`. The gateway's client API keys are in\n"
            "# ../enclave_gateway/api_keys.yml (`enclave keys`). Clients trust the kit's CA in ../../pki/ca.crt.\n"
            "# Per-client limits (docs/runbooks/gateway.md); every other client has the role's defaults.\n"
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
    return dict(keys.KeyStore(inventory_dir, None).read().keys)
