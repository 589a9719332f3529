"""The kit's read-only passes over the cluster, each one `collect` with its tasks' parsers: host facts
(facts.yml), the weights state (weights-status.yml) and what the nodes ran before (rollback-state.yml).
`enclave status` reads through enclave.status.collect, the same way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from enclave.contract import BUILD_TASK, FACTS_TASK, WEIGHTS_STATUS_TASK
from enclave.errors import RunError
from enclave.plan.gather import facts_result
from enclave.runner.collect import collect
from enclave.runner.driver import EventCallback, PlaybookRequest


def gather(inventory: Path, *, limit: str | None = None,
           on_event: EventCallback | None = None) -> dict[str, dict[str, Any]]:
    """Each host's raw facts (enclave.plan.facts reads them); a host that fails them fails the read."""
    run = collect(PlaybookRequest("facts.yml", inventory, limit=limit), {FACTS_TASK: facts_result},
                  on_event=on_event)
    if run.result.exit_code != 0:
        details = run.failures_text(with_task=True)
        raise RunError(f"could not read facts from every host ({details or run.result.status}); "
                       f"run {run.result.run_dir.name}, see `enclave logs`")
    return run.of(FACTS_TASK)


def weights_state(res: dict[str, Any]) -> dict[str, Any]:
    """A host's `nodetool status` (WEIGHTS_STATUS_TASK's stdout); an unreadable one is kept as {"error": ...}."""
    stdout = res.get("stdout") or "{}"
    try:
        return json.loads(stdout)
    except ValueError:
        return {"error": f"unreadable status: {stdout[:200]}"}


def dict_message(res: dict[str, Any]) -> dict[str, Any] | None:
    """A debug task's message when it is a mapping (a report), else nothing."""
    return res["msg"] if isinstance(res.get("msg"), dict) else None


def weights_states(path: Path, limit: str | None = None, *, playbook: str = "weights-status.yml",
                   what: str = "the weights state", report_task: str = "",
                   ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Each host's `nodetool status` of the planned model, read through a playbook that changes nothing, and each
    host's dict message of `report_task` (a debug task of the same playbook) when one is named."""
    parsers = {WEIGHTS_STATUS_TASK: weights_state, **({report_task: dict_message} if report_task else {})}
    run = collect(PlaybookRequest(playbook=playbook, inventory=path, limit=limit), parsers)
    if run.result.exit_code != 0:
        failures = run.failures_text() or run.result.status
        raise RunError(f"could not read {what}: {failures} (run dir {run.result.run_dir})")
    return run.of(WEIGHTS_STATUS_TASK), run.of(report_task) if report_task else {}


def rollback_state(path: Path, nodes: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each node's weights status and engine build report (playbooks/rollback-state.yml, reads only)."""
    return weights_states(path, ",".join(nodes), playbook="rollback-state.yml", what="what the nodes ran before",
                          report_task=BUILD_TASK)
