"""Reading the cluster through a playbook that changes nothing: each host's result of the named tasks, parsed.

Every read-only run (facts.yml, status.yml, weights-status.yml, rollback-state.yml) has the same shape: run the
playbook, keep the `res` of a few tasks per host, parse it. Callers decide what a failed run means to them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enclave.runner import artifacts
from enclave.runner.driver import EventCallback, PlaybookRequest, RunResult, run_playbook
from enclave.runner.events import RunProgress

# A task's `res` -> what to keep for that host; None keeps nothing, ValueError(why) records why in `errors`.
Parser = Callable[[dict[str, Any]], Any]


@dataclass
class Collected:
    result: RunResult
    found: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> host -> parsed value
    errors: dict[str, str] = field(default_factory=dict)  # host -> why a parser refused its answer

    def of(self, task: str) -> dict[str, Any]:
        return self.found.get(task, {})

    def failures_text(self, *, with_task: bool = False) -> str:
        """The run's failures, `host: message` (`host: task: message`) joined by '; ' ('' when none)."""
        return "; ".join(f"{f.host}: {f.task}: {f.message}" if with_task else f"{f.host}: {f.message}"
                         for f in self.result.progress.failures)


def keep_results(found: dict[str, dict[str, Any]], errors: dict[str, str], parsers: Mapping[str, Parser],
                 event: dict[str, Any]) -> None:
    """Fold one ansible-runner event into `found` (task -> host -> value) and `errors` (pure: tested with events)."""
    data = event.get("event_data") or {}
    host, task = data.get("host"), data.get("task")
    if event.get("event") != "runner_on_ok" or not host or task not in parsers:
        return
    try:
        value = parsers[task](data.get("res") or {})
    except ValueError as exc:
        errors[str(host)] = str(exc)
        return
    if value is not None:
        found.setdefault(task, {})[str(host)] = value


def collect(request: PlaybookRequest, parsers: Mapping[str, Parser], *, on_event: EventCallback | None = None,
            cancel: threading.Event | None = None, runs_dir: Path | None = None,
            keep: int = artifacts.DEFAULT_KEEP) -> Collected:
    """Run `request` and keep, per task named in `parsers`, each host's parsed result."""
    found: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}

    def handle(event: dict[str, Any], progress: RunProgress) -> None:
        keep_results(found, errors, parsers, event)
        if on_event is not None:
            on_event(event, progress)

    result = run_playbook(request, on_event=handle, cancel=cancel, runs_dir=runs_dir, keep=keep)
    return Collected(result=result, found=found, errors=errors)
