"""The plan file: where `enclave plan` and `enclave deploy` leave the decided plan for every playbook run.

`<inventory dir>/group_vars/all/enclave_plan.yml` holds one variable, `enclave_plan` (the plan contract), so plain
`ansible-playbook -i INV` reads it like any group_vars. Written atomically and only when its content changes, so a
rerun leaves the file (and the operator's git status) alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from enclave import atomic

PLAN_VAR = "enclave_plan"
HEADER = ("# Written by `enclave plan` (and `enclave deploy`, which plans first): do not edit.\n"
          "# Rerun `enclave plan -i INVENTORY` after changing the inventory, the model or its profile.\n")


def plan_path(inventory: Path) -> Path:
    base = inventory if inventory.is_dir() else inventory.parent
    return base / "group_vars" / "all" / f"{PLAN_VAR}.yml"


def render(document: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump({PLAN_VAR: document}, sort_keys=False, default_flow_style=False, width=120)


def read(inventory: Path) -> dict[str, Any] | None:
    path = plan_path(inventory)
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text()) or {}
    return data.get(PLAN_VAR) if isinstance(data, dict) else None


def write(inventory: Path, document: dict[str, Any]) -> tuple[Path, bool]:
    """Write the plan if it differs from what is there; returns (path, changed)."""
    path = plan_path(inventory)
    text = render(document)
    if path.is_file() and path.read_text() == text:
        return path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, text)
    return path, True
