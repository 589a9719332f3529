"""`enclave kit import`, its pure part: where the kit goes on the staging host and the inventory settings that
point every role at it. Staging the files and serving them (the playbook part) is not written yet: see
docs/runbooks/offline-site.md, "What was proved here".

The settings land in group_vars/all/enclave_kit.yml beside the inventory (like the plan), so both `enclave deploy`
and plain ansible-playbook read them. Every lock is pinned by the sha256 from the kit's verified manifest: the
server that serves the wheels could swap a lock with them, the pin could not be swapped with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from enclave import atomic
from enclave.errors import UsageError
from enclave.hosttools.common import MANIFEST_NAME as MODEL_MANIFEST
from enclave.kit import build, manifest

SETTINGS_NAME = "enclave_kit.yml"
HEADER = ("# Written by `enclave kit import`: points every role at the imported offline site kit.\n"
          "# Rerun the import for a newer kit; remove this file to go back to the site's own sources.\n")


@dataclass(frozen=True)
class StagingPlan:
    kit_id: str  # the first 16 hex digits of KIT.json's sha256: a new kit never overwrites the one in use
    source: Path
    dest: str  # on the staging host
    url: str  # where the staging host serves dest on the private network

    def describe(self) -> str:
        return f"copy {self.source} to the staging host's {self.dest}, served as {self.url}"


def staging_plan(root: Path, serve_url: str, staging_dir: str = "/srv/enclave/kit") -> StagingPlan:
    parts = urlsplit(serve_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--serve-url {serve_url!r}: expected http(s)://STAGING-HOST[:PORT]/PATH/")
    kit_id = manifest.sha256_file(root / manifest.MANIFEST)[:16]
    return StagingPlan(kit_id, root, f"{staging_dir.rstrip('/')}/{kit_id}", f"{serve_url.rstrip('/')}/{kit_id}/")


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
        "weights_source": {"type": "local", "path": f"{where.dest}/{bundle}/files"},
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
