"""Getting raw host facts: from a run of playbooks/facts.yml, or from a file recorded earlier."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from enclave.errors import RunError, UsageError
from enclave.runner import PlaybookRequest, RunProgress, run_playbook

FACTS_TASK = "Read GPUs, drivers, memory, disk and addresses"


def facts_from_events(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {}
    for event in events:
        data = event.get("event_data") or {}
        if event.get("event") == "runner_on_ok" and data.get("task") == FACTS_TASK:
            facts = ((data.get("res") or {}).get("ansible_facts") or {}).get("enclave_host")
            if facts is not None:
                found[str(data["host"])] = facts
    return found


def gather(inventory: Path, *, limit: str | None = None,
           on_event: Callable[[dict[str, Any], RunProgress], None] | None = None) -> dict[str, dict[str, Any]]:
    events: list[dict[str, Any]] = []

    def keep(event: dict[str, Any], progress: RunProgress) -> None:
        events.append(event)
        if on_event is not None:
            on_event(event, progress)

    result = run_playbook(PlaybookRequest("facts.yml", inventory, limit=limit), on_event=keep)
    if result.exit_code != 0:
        details = "; ".join(f"{f.host}: {f.task}: {f.message}" for f in result.progress.failures)
        raise RunError(f"could not read facts from every host ({details or result.status}); "
                       f"run {result.run_dir.name}, see `enclave logs`")
    return facts_from_events(events)


def load_recorded(path: Path) -> dict[str, dict[str, Any]]:
    """A mapping host -> the module's `enclave_host` facts, as JSON or YAML (e.g. recorded on real hosts)."""
    try:
        data = yaml.safe_load(path.read_text()) if path.suffix in (".yml", ".yaml") else json.loads(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise UsageError(f"--facts {path}: cannot read it ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UsageError(f"--facts {path}: expected a mapping of host name to facts")
    return {str(k): v for k, v in data.items()}
