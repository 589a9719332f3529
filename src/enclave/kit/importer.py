"""`enclave kit import`, its pure part: where the kit goes on the staging host and the inventory settings that
point every role at it. The staging host copies, checks and serves it in the offline_kit role (playbooks/kit.yml),
which `kit import` runs and every deploy runs first.

The settings land in group_vars/all/enclave_kit.yml beside the inventory (like the plan), so both `enclave deploy`
and plain ansible-playbook read them. Every lock is pinned by the sha256 from the kit's verified manifest: the
server that serves the wheels could swap a lock with them, the pin could not be swapped with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from enclave import atomic
from enclave.errors import UsageError
from enclave.hosttools.common import MANIFEST_NAME as MODEL_MANIFEST
from enclave.kit import build, manifest
from enclave.plan.inventory import Inventory
from enclave.roles import role_data

SETTINGS_NAME = "enclave_kit.yml"
HEADER = ("# Written by `enclave kit import`: points every role at the imported offline site kit.\n"
          "# Rerun the import for a newer kit; remove this file to go back to the site's own sources.\n")
STAGING = "enclave_staging"


@dataclass(frozen=True)
class StagingPlan:
    kit_sha256: str  # of KIT.json: the staging host's copy is checked against it
    source: Path
    host: str  # the address in the URL every host installs from (the staging host's)
    port: int
    path: str  # the URL path the kits are served under, without a trailing slash
    root: str  # the staged kits' directory on the staging host (the offline_kit role's default)

    @property
    def kit_id(self) -> str:
        """The first 16 hex digits of KIT.json's sha256: a new kit never overwrites the one in use."""
        return self.kit_sha256[:16]

    @property
    def dest(self) -> str:
        return f"{self.root}/{self.kit_id}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}/{self.kit_id}/"

    def describe(self) -> str:
        return f"copy {self.source} to the staging host's {self.dest}, served as {self.url}"


def staging_host(inventory: Inventory) -> tuple[str, str]:
    """(inventory name, address) of the one staging host, which serves the kit."""
    hosts = inventory.hosts(STAGING)
    if len(hosts) != 1:
        raise UsageError(f"{inventory.path}: group {STAGING} must hold exactly one host to serve the kit; has "
                         + (", ".join(hosts) or "none"))
    return hosts[0], str(inventory.hostvars.get(hosts[0], {}).get("ansible_host") or hosts[0])


def default_serve_url(inventory: Inventory) -> str:
    defaults = role_data("offline_kit")
    _, address = staging_host(inventory)
    return f"http://{address}:{defaults['offline_kit_port']}{defaults['offline_kit_url_path']}"


def staging_plan(root: Path, serve_url: str, inventory: Inventory | None = None) -> StagingPlan:
    """Where the kit goes and where it is served; with the inventory, the URL must name its staging host."""
    parts = urlsplit(serve_url)
    if parts.scheme != "http" or not parts.hostname or parts.query or parts.fragment:
        raise UsageError(f"--serve-url {serve_url!r}: expected http://STAGING-HOST[:PORT]/PATH (the staging host "
                         "serves the kit over plain HTTP on the private network; apt and pip check what they get "
                         "against the kit's signed key and pinned hashes)")
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise UsageError(f"--serve-url {serve_url!r}: {exc}") from None
    path = parts.path.rstrip("/")
    if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", path):
        raise UsageError(f"--serve-url {serve_url!r}: give a path to serve the kits under, e.g. /kit")
    if inventory is not None:
        name, address = staging_host(inventory)
        if parts.hostname not in (name, address):
            raise UsageError(f"--serve-url {serve_url!r}: the kit is served by the staging host {name} "
                             f"({address}); name it in the URL")
    return StagingPlan(manifest.sha256_file(root / manifest.MANIFEST), root, parts.hostname, port, path,
                       str(role_data("offline_kit")["offline_kit_root"]))


def settings(root: Path, document: dict[str, Any], plan: dict[str, Any], where: StagingPlan,
             engine: str) -> dict[str, Any]:
    """The inventory variables that make the roles install from the kit and nothing else."""
    files = {f["path"]: f["sha256"] for f in document["files"]}
    bundle = f"weights/{str(plan['repo']).replace('/', '--')}--{plan['revision']}"
    if f"{bundle}/files/{MODEL_MANIFEST}" not in files:
        raise UsageError(f"{root / bundle}: the weights are split into parts (kit build --split-gb); join them "
                         "on the staging host with `enclave weights import` and set weights_source yourself")
    return {
        "enclave_apt_sources": [{"name": "enclave-kit", "uris": [where.url + build.APT_DIR + "/"], "suites": ["./"],
                                 "key": (root / build.APT_KEY).read_text()}],
        "enclave_apt_sources_exclusive": True,
        "engine_wheelhouse_url": f"{where.url}wheels/engine/{engine}/",
        "engine_wheelhouse_lock_sha256": files[f"wheels/engine/{engine}/requirements.txt"],
        "weights_hub_client_find_links": f"{where.url}wheels/hub-client/",
        "weights_hub_client_lock_sha256": files["wheels/hub-client/requirements.txt"],
        # templated on offline_kit_root below: where the staged kit is, said once
        "weights_source": {"type": "local", "path": f"{{{{ offline_kit_root }}}}/{where.kit_id}/{bundle}/files"},
        # the offline_kit role: what to stage and serve (playbooks/kit.yml); the root here as well as in the role's
        # defaults, so the weights role and teardown (which keeps the staged kit with --keep-weights) see it too
        "offline_kit_root": where.root,
        "offline_kit_sha256": where.kit_sha256,
        "offline_kit_source": str(where.source.resolve()),
        "offline_kit_port": where.port,
        "offline_kit_url_path": where.path,
    }


def settings_path(inventory: Path) -> Path:
    return (inventory if inventory.is_dir() else inventory.parent) / "group_vars" / "all" / SETTINGS_NAME


def conflicts(inventory: Path, keys: list[str]) -> list[str]:
    """`FILE: KEY` for every other group_vars/host_vars file that sets one of keys: Ansible would let it win
    over (or merge unpredictably with) the kit's file, so the roles would not install from the kit."""
    base = inventory if inventory.is_dir() else inventory.parent
    ours = settings_path(inventory)
    found = []
    for tree in ("group_vars", "host_vars"):
        for path in sorted((base / tree).rglob("*")):
            if path == ours or not path.is_file() or path.suffix not in (".yml", ".yaml", ""):
                continue
            text = path.read_text(errors="replace")
            if text.startswith("$ANSIBLE_VAULT"):
                continue  # encrypted: holds secrets, not sources
            data = yaml.safe_load(text)
            if isinstance(data, dict):
                found += [f"{path}: {key}" for key in keys if key in data]
    return found


def write_settings(inventory: Path, values: dict[str, Any]) -> Path:
    clash = conflicts(inventory, sorted(values))
    if clash:
        raise UsageError("the inventory already sets what the kit import writes (it would override the kit's "
                         f"{SETTINGS_NAME}); remove these settings first: " + "; ".join(clash))
    path = settings_path(inventory)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = HEADER + yaml.safe_dump(values, sort_keys=True, default_flow_style=False, width=120)
    atomic.write_text(path, text)
    return path
