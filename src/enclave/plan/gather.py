"""Raw host facts: what a host's answer to playbooks/facts.yml holds, or a file recorded earlier. Pure: the run
itself is enclave.runner.reads.gather."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from enclave.errors import UsageError


def facts_result(res: dict[str, Any]) -> dict[str, Any] | None:
    """The module's `enclave_host` facts in FACTS_TASK's result; None when it returned none."""
    return ((res or {}).get("ansible_facts") or {}).get("enclave_host")


def load_recorded(path: Path) -> dict[str, dict[str, Any]]:
    """A mapping host -> the module's `enclave_host` facts, as JSON or YAML (e.g. recorded on real hosts)."""
    try:
        data = yaml.safe_load(path.read_text()) if path.suffix in (".yml", ".yaml") else json.loads(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise UsageError(f"--facts {path}: cannot read it ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UsageError(f"--facts {path}: expected a mapping of host name to facts")
    return {str(k): v for k, v in data.items()}
