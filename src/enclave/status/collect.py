"""One read-only pass over the cluster (playbooks/status.yml): each host's raw answer, or why it gave none."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enclave import paths
from enclave.contract import GATEWAY_STATUS_TASK, NODE_STATUS_TASK
from enclave.errors import RunError
from enclave.runner import PlaybookRequest
from enclave.runner.collect import collect

# Status runs are frequent (--watch): they keep their own few run dirs, so they never push a deploy's logs out.
RUNS_SUBDIR = "status-runs"
KEEP_RUNS = 3


@dataclass
class Answers:
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)  # host -> {"node": ..., "gateway": ...}
    errors: dict[str, str] = field(default_factory=dict)  # host -> why it did not answer
    cancelled: bool = False


def status_request(inventory: Path, *, samples: int, gap: float) -> PlaybookRequest:
    """The run that reads every engine and the gateway (pure: testable without running anything)."""
    return PlaybookRequest(playbook="status.yml", inventory=inventory,
                           extra_vars={"engine_status_samples": samples, "engine_status_gap": gap})


def node_answer(res: dict[str, Any]) -> Any:
    stdout = res.get("stdout") or ""
    try:
        return json.loads(stdout)
    except ValueError:
        raise ValueError(f"unreadable answer from the status probe: {stdout[:200]}") from None


def gateway_answer(res: dict[str, Any]) -> Any:
    return res.get("msg") or {}


def read_answers(inventory: Path, *, samples: int = 2, gap: float = 2.0,
                 cancel: threading.Event | None = None) -> Answers:
    run = collect(status_request(inventory, samples=samples, gap=gap),
                  {NODE_STATUS_TASK: node_answer, GATEWAY_STATUS_TASK: gateway_answer}, cancel=cancel,
                  runs_dir=paths.state_dir() / RUNS_SUBDIR, keep=KEEP_RUNS)
    found = Answers(errors=dict(run.errors), cancelled=run.result.cancelled)
    for key, task in (("node", NODE_STATUS_TASK), ("gateway", GATEWAY_STATUS_TASK)):
        for host, answer in run.of(task).items():
            found.answers.setdefault(host, {})[key] = answer
    for failure in run.result.progress.failures:
        found.errors.setdefault(failure.host, f"{failure.task}: {failure.message}")
    if not found.cancelled and not found.answers and run.result.exit_code != 0:
        why = "; ".join(f"{h}: {m}" for h, m in found.errors.items()) or run.result.status
        raise RunError(f"could not read the cluster's state: {why} (run dir {run.result.run_dir})")
    return found
