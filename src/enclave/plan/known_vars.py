"""The variables enclave understands, read from the roles themselves (defaults and argument specs), so the
typo check never drifts from what the roles actually use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class KnownVars:
    names: frozenset[str]
    internal: frozenset[str]  # role vars/: set by the kit, an inventory value would be silently ignored
    prefixes: tuple[str, ...]  # "enclave_", "base_", ...: names under these are ours to check
    types: dict[str, str]

    def owns(self, name: str) -> bool:
        return name.startswith(self.prefixes)


def _yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text())
    return data if isinstance(data, dict) else {}


def load_known_vars(roles_dir: Path) -> KnownVars:
    names: set[str] = set()
    internal: set[str] = set()
    types: dict[str, str] = {}
    prefixes = {"enclave_"}
    for role in sorted(p for p in roles_dir.iterdir() if (p / "tasks").is_dir()):
        prefixes.add(f"{role.name}_")
        names.update(_yaml(role / "defaults" / "main.yml"))
        internal.update(_yaml(role / "vars" / "main.yml"))
        specs = _yaml(role / "meta" / "argument_specs.yml").get("argument_specs") or {}
        for entry in specs.values():
            for option, spec in (entry.get("options") or {}).items():
                names.add(option)
                if isinstance(spec, dict) and spec.get("type"):
                    types[option] = str(spec["type"])
    return KnownVars(frozenset(names), frozenset(internal - names), tuple(sorted(prefixes)), types)
