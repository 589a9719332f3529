"""Reading Prometheus's and Alertmanager's HTTP API answers for the monitoring checks (pure: JSON in, findings out).

The checks fetch on the monitoring host itself (the servers listen on its private address only) and hand the text
here; tests/unit/test_check_prometheus.py feeds answers recorded from Prometheus 2.42.
"""

from __future__ import annotations

import json
import re
from typing import Any

from enclave import paths

RULES_TEMPLATE = "monitoring/enclave-alerts.rules.yml.j2"
# Run on the host with its python3 (every enclave host has it: Ansible needs it); prints the body, exit 1 on error.
FETCH = ("import sys, urllib.request\n"
         "try:\n"
         "    print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())\n"
         "except Exception as exc:\n"
         "    print(exc, file=sys.stderr); sys.exit(1)\n")


def _data(text: str, what: str) -> Any:
    answer = json.loads(text)
    if answer.get("status") != "success":
        raise ValueError(f"Prometheus answered {what} with {answer.get('status')}: {answer.get('error', '')}")
    return answer["data"]


def target_health(text: str) -> tuple[list[str], list[str]]:
    """(down, not yet scraped) targets of /api/v1/targets, each as `job instance (host): last error`."""
    down, unknown = [], []
    for target in _data(text, "/api/v1/targets")["activeTargets"]:
        labels = target.get("labels", {})
        name = f"{labels.get('job')} {labels.get('instance')}" + (f" ({labels['host']})" if "host" in labels else "")
        if target.get("health") == "unknown":
            unknown.append(name)
        elif target.get("health") != "up":
            down.append(f"{name}: {target.get('lastError') or target.get('health')}")
    return down, unknown


def shipped_alerts() -> set[str]:
    """The alert names the monitoring role ships (read from its rules template, so the list never drifts)."""
    text = (paths.share_dir() / "templates" / RULES_TEMPLATE).read_text()
    return set(re.findall(r"^\s*- alert: (\w+)\s*$", text, re.M))


def rule_problems(text: str, expected: set[str]) -> list[str]:
    """Alert rules of /api/v1/rules that are missing or whose evaluation fails."""
    loaded: dict[str, Any] = {}
    for group in _data(text, "/api/v1/rules")["groups"]:
        for rule in group["rules"]:
            if rule.get("type") == "alerting":
                loaded[rule["name"]] = rule
    problems = [f"rule {name} is not loaded" for name in sorted(expected - set(loaded))]
    problems += [f"rule {name} fails to evaluate: {rule.get('lastError', '')}" for name, rule in sorted(loaded.items())
                 if rule.get("health") not in ("ok", "unknown")]
    return problems
