"""firewall: the kit's nftables table is loaded (and reloaded at boot), drops what it does not allow in and out,
routes nothing for others, and counts the egress and forwarding it drops."""

from __future__ import annotations

import json
from typing import Any

from enclave.checks.settings import role_data

testinfra_hosts = ["ansible://enclave_*"]

_VARS = role_data("firewall", "vars")
TABLE = _VARS["firewall_table"]
UNIT = _VARS["firewall_unit"]


def _nft(host: Any, what: str) -> list[dict[str, Any]]:
    """`nft -j list ...` as objects; an empty list when nft cannot list it (the table is missing)."""
    result = host.run(f"nft -j list {what}")
    if result.rc != 0:
        return []
    return [entry for entry in json.loads(result.stdout)["nftables"] if "metainfo" not in entry]


def _table(host: Any) -> list[dict[str, Any]]:
    assert host.exists("nft"), "nft is missing: the firewall role was never applied"
    entries = _nft(host, f"table inet {TABLE}")
    assert entries, f"the table inet {TABLE} is not loaded: nothing is filtered (systemctl restart {UNIT})"
    return entries


def test_ruleset_loaded(host: Any) -> None:
    table = _table(host)
    unit = host.service(UNIT)
    assert unit.is_enabled, f"{UNIT} is not enabled: the firewall would be gone after a reboot"
    assert unit.is_running, f"{UNIT} is not active"
    chains = {e["chain"]["name"] for e in table if "chain" in e}
    assert {"input", "output", "forward"} <= chains, f"table inet {TABLE} lacks its chains (has {sorted(chains)})"


def test_ingress_egress_and_forward_policy_drop(host: Any) -> None:
    table = _table(host)
    policies = {e["chain"]["name"]: e["chain"].get("policy") for e in table if "chain" in e}
    wrong = [f"{name} policy is {policies.get(name)}" for name in ("input", "output", "forward")
             if policies.get(name) != "drop"]
    assert not wrong, "; ".join(wrong) + ": traffic no rule allows passes"


def test_dropped_egress_is_counted(host: Any) -> None:
    table = _table(host)
    counters = {e["counter"]["name"] for e in table if "counter" in e}
    missing = {"dropped_egress", "egress_public", "dropped_forward"} - counters
    assert not missing, f"counters {sorted(missing)} are missing from table inet {TABLE}"
    output = [e["rule"] for e in table if "rule" in e and e["rule"]["chain"] == "output"]
    # The counter must sit on the output chain's last rules, where everything no rule allowed arrives.
    counted = any(any(s.get("counter") == "dropped_egress" for s in rule["expr"]) for rule in output[-2:])
    assert counted, "dropped egress is not counted: the output chain does not end in counter dropped_egress"
