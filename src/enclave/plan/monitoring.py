"""Where the monitoring server (Prometheus, Alertmanager) runs: decided once here, read by every role from the plan.

The optional group `enclave_monitoring` names the host; without it the first gateway host (in name order) carries
it, since the gateway already is the host operators reach. The firewall opens each exporter to this host only, so
the firewall and the monitoring role must agree on it: both read `enclave_plan.monitoring.host` instead of each
deriving it. Pure: groups in (as `enclave.plan.inventory.Inventory.groups` holds them), a decision out.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

MONITORING_GROUP = "enclave_monitoring"


def check_monitoring_group(groups: Mapping[str, list[str]], enclave_groups: Iterable[str]) -> list[str]:
    """Problems with `enclave_monitoring`: exactly one host, one the kit already provisions and firewalls."""
    members = groups.get(MONITORING_GROUP)
    if members is None:
        return []
    if len(members) != 1:
        return [f"group '{MONITORING_GROUP}' must hold exactly one host (the Prometheus and Alertmanager host); has "
                + (", ".join(sorted(members)) or "none")]
    enclave_groups = list(enclave_groups)
    if not any(members[0] in groups.get(g, []) for g in enclave_groups):
        # A dedicated host would need the base and firewall plays too; until they run there it must be one of these.
        return [f"group '{MONITORING_GROUP}': host {members[0]} is in none of {', '.join(enclave_groups)}; "
                "put the monitoring server on a node, the gateway or the staging host"]
    return []


def monitoring_host(groups: Mapping[str, list[str]]) -> str | None:
    """The monitoring host: the `enclave_monitoring` host, else the first gateway host (None without either)."""
    for group in (MONITORING_GROUP, "enclave_gateway"):
        members = sorted(groups.get(group) or [])
        if members:
            return members[0]
    return None


def check_settings(host: str, values: dict[str, Any], patterns: Mapping[str, str],
                   unresolved: Collection[str] = ()) -> list[str]:
    """The monitoring host's receivers, retention and Grafana settings, as the role's validate.yml asserts them (with
    the role's own patterns, `monitoring_*_pattern` in its vars), checked before any host is touched. `values` holds
    what the inventory sets; a name it leaves to the role's default is absent, and one only Ansible can resolve (a
    vaulted password) is in `unresolved` instead."""
    problems = []
    urls = values.get("monitoring_webhook_urls", [])
    for url in urls if isinstance(urls, list) else []:
        if not (isinstance(url, str) and re.fullmatch(patterns["monitoring_webhook_url_pattern"], url)):
            problems.append(f"host '{host}': monitoring_webhook_urls entry {str(url)[:80]!r} is not an http(s) URL")
    smtp = values.get("monitoring_smtp", {})
    if isinstance(smtp, dict) and smtp:
        smarthost, recipients = str(smtp.get("smarthost", "")), smtp.get("to")
        if (not re.fullmatch(patterns["monitoring_smarthost_pattern"], smarthost) or not smtp.get("from")
                or not isinstance(recipients, list) or not recipients):
            problems.append(f"host '{host}': monitoring_smtp needs smarthost (host:port), from and to (a list), e.g. "
                            '{smarthost: "10.40.1.25:25", from: enclave@example.internal, to: [ops@example.internal]}')
    size = values.get("monitoring_retention_size_gb", 1)
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        problems.append(f"host '{host}': monitoring_retention_size_gb must be a positive number of GiB, got {size!r}")
    duration = values.get("monitoring_retention_time", "1d")
    if not (isinstance(duration, str) and re.fullmatch(patterns["monitoring_duration_pattern"], duration)):
        problems.append(f"host '{host}': monitoring_retention_time must be a Prometheus duration such as 30d, got "
                        f"{str(duration)[:40]!r}")
    grafana = values.get("monitoring_grafana", False)
    if not isinstance(grafana, bool):
        problems.append(f"host '{host}': monitoring_grafana must be true or false, got {str(grafana)[:40]!r}")
    elif grafana and "monitoring_grafana_admin_password" not in unresolved and not (
            isinstance(password := values.get("monitoring_grafana_admin_password", ""), str) and password):
        problems.append(f"host '{host}': monitoring_grafana is true but monitoring_grafana_admin_password is not set "
                        "(keep it in vault: docs/runbooks/monitoring.md, \"Grafana\")")
    return problems
