"""Every `tasks_from` entry point a playbook or role uses is declared in that role's argument specs, so Ansible
checks the variables it is handed (a wrong type fails naming the variable) and ansible-doc lists it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"
ROLE_KEYS = ("ansible.builtin.import_role", "ansible.builtin.include_role", "import_role", "include_role")


def _entry_points(node: Any, found: set[tuple[str, str]]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ROLE_KEYS and isinstance(value, dict) and "tasks_from" in value:
                found.add((value["name"], re.sub(r"\.ya?ml$", "", value["tasks_from"])))
            _entry_points(value, found)
    elif isinstance(node, list):
        for item in node:
            _entry_points(item, found)


def test_every_tasks_from_in_use_is_declared() -> None:
    used: set[tuple[str, str]] = set()
    for path in PLAYBOOKS.rglob("*.yml"):
        _entry_points(yaml.safe_load(path.read_text()), used)
    assert len(used) >= 10, used  # the walk found the kit's entry points
    undeclared = []
    for role, entry in sorted(used):
        specs = yaml.safe_load((PLAYBOOKS / "roles" / role / "meta" / "argument_specs.yml").read_text())
        if entry not in specs["argument_specs"]:
            undeclared.append(f"{role}: tasks_from {entry}")
    assert undeclared == []
