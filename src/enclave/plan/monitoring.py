"""Where the monitoring server (Prometheus, Alertmanager) runs: decided once here, read by every role from the plan.

The optional group `enclave_monitoring` names the host; without it the first gateway host (in name order) carries
it, since the gateway already is the host operators reach. The firewall opens each exporter to this host only, so
the firewall and the monitoring role must agree on it: both read `enclave_plan.monitoring.host` instead of each
deriving it. Pure: groups in (as `enclave.plan.inventory.Inventory.groups` holds them), a decision out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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
