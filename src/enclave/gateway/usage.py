"""`enclave usage`: the requests and tokens each client used in a window, from the gateways' access logs.

Each gateway sums its own log per client and model (playbooks/usage.yml, the gateway role's `usage` entry point
running accesslog.py), so only the sums cross the network; here they are checked, added over the gateways and
turned into rows (pure: tested without running anything).
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enclave.contract import USAGE_TASK
from enclave.errors import RunError
from enclave.runner.collect import collect
from enclave.runner.driver import PlaybookRequest

COUNTS = ("requests", "prompt_tokens", "completion_tokens")


@dataclass(frozen=True)
class Row:
    client: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    models: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_json(self) -> dict[str, Any]:
        return {"client": self.client, "requests": self.requests, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "total_tokens": self.total_tokens,
                "models": self.models}


def usage_request(inventory: Path, since: dt.datetime) -> PlaybookRequest:
    """The read-only run that sums every gateway's log from `since` on."""
    return PlaybookRequest(playbook="usage.yml", inventory=inventory,
                           extra_vars={"gateway_usage_since": int(since.timestamp())})


def gateway_sums(res: dict[str, Any]) -> dict[str, dict[str, dict[str, int]]]:
    """One gateway's answer (USAGE_TASK's message): {client: {model: {requests, prompt_tokens,
    completion_tokens}}}, every count a whole number >= 0; anything else is a ValueError naming what is wrong."""
    msg = res.get("msg")
    clients = msg.get("clients") if isinstance(msg, dict) else None
    if not isinstance(clients, dict):
        raise ValueError(f"unreadable usage answer: {str(msg)[:200]}")
    for client, models in clients.items():
        if not isinstance(models, dict):
            raise ValueError(f"unreadable usage of client {client!r}")
        for model, counts in models.items():
            if not isinstance(counts, dict) or any(
                    not isinstance(counts.get(k), int) or counts[k] < 0 for k in COUNTS):
                raise ValueError(f"unreadable usage of client {client!r}, model {model!r}: {str(counts)[:100]}")
    return clients


def combine(per_gateway: dict[str, dict[str, dict[str, dict[str, int]]]], client: str | None = None) -> list[Row]:
    """Per client (only `client` when given), the sums over every gateway and model, by client name. Requests
    without a valid key are the client ""."""
    merged: dict[str, dict[str, dict[str, int]]] = {}
    for clients in per_gateway.values():
        for name, models in clients.items():
            if client is not None and name != client:
                continue
            for model, counts in models.items():
                into = merged.setdefault(name, {}).setdefault(model, dict.fromkeys(COUNTS, 0))
                for key in COUNTS:
                    into[key] += counts[key]
    return [Row(name, *(sum(m[k] for m in models.values()) for k in COUNTS), models=models)
            for name, models in sorted(merged.items())]


def read_usage(inventory: Path, since: dt.datetime, *, client: str | None = None,
               cancel: threading.Event | None = None) -> list[Row]:
    """Run usage.yml and combine the gateways' sums; a gateway that could not answer fails the read (a partial sum
    would understate what clients used)."""
    run = collect(usage_request(inventory, since), {USAGE_TASK: gateway_sums}, cancel=cancel)
    found = run.of(USAGE_TASK)
    if run.result.exit_code != 0 or run.errors or not found:
        why = run.failures_text(with_task=True) or "; ".join(f"{h}: {m}" for h, m in run.errors.items())
        raise RunError(f"could not read the gateways' usage: {why or run.result.status or 'no gateway answered'} "
                       f"(run dir {run.result.run_dir})")
    return combine(found, client)
