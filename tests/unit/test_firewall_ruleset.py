"""The firewall role's ruleset, rendered by Ansible for each kind of host and checked by nft itself (`nft -c`)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.host_tools import require_tool
from tests.unit.role_render import RenderError, render

GROUPS = {
    "enclave_nodes": {"node1": {"ansible_host": "10.40.0.11"}, "node2": {"ansible_host": "10.40.0.12"}},
    "enclave_gateway": {"gw": {"ansible_host": "10.40.0.10"}},
    "enclave_staging": {"stage": {"ansible_host": "10.40.0.20"}},
}
EXTRA: dict[str, Any] = {
    "enclave_private_network": "10.40.0.0/24",
    "firewall_admin_sources": ["10.40.1.0/24", "192.0.2.7", "fd00:1::/64"],
    "firewall_egress_services": [{"name": "dns", "to": ["10.40.1.53"], "proto": "udp", "ports": [53]},
                                 {"name": "mirror", "to": ["10.40.1.80/32"], "proto": "tcp", "ports": [80, 443]}],
    "firewall_staging_egress_services": [{"name": "hub-mirror", "to": ["10.40.1.90"], "proto": "tcp",
                                          "ports": ["8000-8010"]}],
}


@pytest.fixture(scope="module")
def rulesets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    rendered = render(tmp_path_factory.mktemp("firewall"), roles=["firewall"], groups=GROUPS,
                      templates={"enclave.nft": "firewall/enclave.nft.j2",
                                 "unit": "firewall/enclave-firewall.service.j2"}, extra=EXTRA)
    return {host: files["enclave.nft"] for host, files in rendered.items()} | {
        f"{host}.unit": files["unit"] for host, files in rendered.items()}


def nft_check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    require_tool("nft")
    path = tmp_path / "ruleset.nft"
    path.write_text(text)
    return subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("host", ["node1", "gw", "stage"])
def test_ruleset_is_valid_nft(tmp_path: Path, rulesets: dict[str, str], host: str) -> None:
    proc = nft_check(tmp_path, rulesets[host])
    assert proc.returncode == 0, proc.stderr


def test_nft_check_catches_a_broken_ruleset(tmp_path: Path, rulesets: dict[str, str]) -> None:
    broken = rulesets["node1"].replace("policy drop;", "policy dorp;", 1)
    assert nft_check(tmp_path, broken).returncode != 0


def test_only_the_kits_table_is_replaced(rulesets: dict[str, str]) -> None:
    text = rulesets["node1"]
    assert "flush ruleset" not in text
    assert {m for m in re.findall(r"^(?:table|delete table) (\S+ \S+)", text, re.M)} == {"inet enclave"}
    # Make-then-delete first, so one `nft -f` replaces the table in a single transaction.
    assert text.index("delete table inet enclave") < text.index("table inet enclave {")


def chain(text: str, name: str) -> str:
    match = re.search(rf"chain {name} \{{(.*?)\n\t\}}", text, re.S)
    assert match, f"chain {name} missing"
    return match.group(1)


def test_egress_is_dropped_counted_and_logged(rulesets: dict[str, str]) -> None:
    for host in ("node1", "gw", "stage"):
        output = chain(rulesets[host], "output")
        assert "type filter hook output priority filter; policy drop;" in output
        assert re.search(r"counter dropped_egress \{", rulesets[host])
        assert 'counter name "dropped_egress"' in output
        assert re.search(r"limit rate 10/minute burst 20 packets log prefix", output)
        assert "ip daddr @egress_v4 accept" in output
        assert "elements = { 10.40.0.0/24 }" in rulesets[host]


def test_listed_services_and_staging_only_services(rulesets: dict[str, str]) -> None:
    for host in ("node1", "gw", "stage"):
        output = chain(rulesets[host], "output")
        assert 'ip daddr { 10.40.1.53 } udp dport { 53 } accept comment "dns"' in output
        assert 'ip daddr { 10.40.1.80/32 } tcp dport { 80, 443 } accept comment "mirror"' in output
    assert 'tcp dport { 8000-8010 } accept comment "hub-mirror"' in chain(rulesets["stage"], "output")
    assert "hub-mirror" not in rulesets["node1"]


def test_ingress_allow_list_per_role(rulesets: dict[str, str]) -> None:
    node, gw = chain(rulesets["node1"], "input"), chain(rulesets["gw"], "input")
    assert "policy drop;" in node and "policy drop;" in gw
    assert "tcp dport 8000 ip saddr @gateways_v4 accept" in node
    assert re.search(r"set gateways_v4 \{[^}]*elements = \{ 10.40.0.10 \}", rulesets["node1"])
    assert re.search(r"set peers_v4 \{[^}]*elements = \{ 10.40.0.11, 10.40.0.12, 10.40.0.20 \}", rulesets["node1"])
    assert re.search(r"set nodes_v4 \{[^}]*elements = \{ 10.40.0.11, 10.40.0.12 \}", rulesets["node1"])
    assert re.search(r"set staging_v4 \{[^}]*elements = \{ 10.40.0.20 \}", rulesets["node1"])
    cluster = "tcp dport { 6379, 7480, 8730, 10001-19999, 29500-29599, 32768-60999 } accept"
    assert f"ip saddr @nodes_v4 {cluster}" in node and "ip saddr @nodes_v4 udp dport { 32768-60999 } accept" in node
    # Staging joins no replica: between it and the nodes only the weights relay and seed (and SSH) are open.
    stage = chain(rulesets["stage"], "input")
    assert "ip saddr @staging_v4 tcp dport { 7480, 8730 } accept" in node
    assert "ip saddr @nodes_v4 tcp dport { 7480, 8730 } accept" in stage
    assert cluster not in stage and "udp dport" not in stage and "8000" not in stage
    assert not re.search(r"@(peers|staging)_v4 (tcp|udp) dport \{[^}]*(6379|10001|29500|32768)", node)
    assert re.search(r"set admin_v4 \{[^}]*elements = \{ 10.40.1.0/24, 192.0.2.7 \}", rulesets["node1"])
    assert re.search(r"set admin_v6 \{[^}]*elements = \{ fd00:1::/64 \}", rulesets["node1"])
    # The gateway serves clients and runs no engine; nodes do not serve clients.
    assert "tcp dport { 443 } ip saddr @clients_v4 accept" in gw
    assert "8000" not in gw and "_v4 tcp dport" not in gw.replace("@clients_v4", "")
    assert "443" not in node
    # The gateway is not a peer: it reaches nodes' SSH only if an admin network holds it.
    assert "tcp dport 22 ip saddr @peers_v4 accept" in node and "@peers_v4" not in gw


def test_forwarding_is_dropped_and_counted(rulesets: dict[str, str]) -> None:
    for host in ("node1", "gw", "stage"):
        forward = chain(rulesets[host], "forward")
        assert "type filter hook forward priority filter; policy drop;" in forward
        assert 'counter name "dropped_forward"' in forward and "accept" not in forward
        assert re.search(r"counter dropped_forward \{", rulesets[host])


def test_icmpv6_neighbour_discovery_from_the_link_only_and_echo_limited(rulesets: dict[str, str]) -> None:
    for host in ("node1", "gw", "stage"):
        lines = [line.strip() for line in chain(rulesets[host], "input").splitlines()]
        icmpv6 = [line for line in lines if line.startswith("icmpv6")]
        assert "icmpv6 type nd-router-advert ip6 saddr fe80::/10 ip6 hoplimit 255 accept" in icmpv6
        assert "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept" in icmpv6
        # The echo limit comes before the conntrack shortcut (a flood is one tracked "connection").
        assert lines.index("icmpv6 type echo-request limit rate over 50/second drop") < lines.index(
            "ct state established,related accept")
        assert lines.index("icmp type echo-request limit rate over 50/second drop") < lines.index(
            "ct state established,related accept")
        # No other rule lets router adverts in without those conditions.
        assert not [line for line in icmpv6 if "nd-router-advert" in line and "hoplimit 255" not in line]


def test_unit_loads_replaces_and_removes_only_the_table(rulesets: dict[str, str]) -> None:
    unit = rulesets["node1.unit"]
    assert "ExecStart=/usr/sbin/nft -f /etc/enclave/firewall.nft" in unit
    assert "ExecReload=/usr/sbin/nft -f /etc/enclave/firewall.nft" in unit
    assert "ExecStop=/usr/sbin/nft delete table inet enclave" in unit
    assert "After=nftables.service" in unit


def test_unit_passes_systemd_analyze(tmp_path: Path, rulesets: dict[str, str]) -> None:
    require_tool("systemd-analyze")
    unit = tmp_path / "enclave-firewall.service"
    unit.write_text(rulesets["node1.unit"].replace("/usr/sbin/nft", require_tool("nft")))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr


def test_a_host_off_the_private_network_is_named(tmp_path: Path) -> None:
    groups = {**GROUPS, "enclave_nodes": {"node1": {"ansible_host": "10.99.0.11"}}}
    with pytest.raises(RenderError, match=r"node1: none of its addresses \(10.99.0.11\) is in enclave_private_network"):
        render(tmp_path, roles=["firewall"], groups=groups, templates={"x": "firewall/enclave.nft.j2"}, extra=EXTRA,
               hosts="gw")


def test_a_malformed_admin_cidr_is_named(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match=r"'10.40.1.0/99' is not an address or CIDR"):
        render(tmp_path, roles=["firewall"], groups=GROUPS, templates={"x": "firewall/enclave.nft.j2"},
               extra={**EXTRA, "firewall_admin_sources": ["10.40.1.0/99"]}, hosts="gw")


def test_exporters_open_to_the_planned_monitoring_host_only(tmp_path: Path) -> None:
    plan = {"port": 8000, "monitoring": {"host": "gw"}}
    rendered = render(tmp_path, roles=["firewall"], groups=GROUPS, templates={"nft": "firewall/enclave.nft.j2"},
                      extra={**EXTRA, "enclave_plan": plan})
    texts = {host: files["nft"] for host, files in rendered.items()}
    for host, text in texts.items():
        assert re.search(r"set monitoring_v4 \{[^}]*elements = \{ 10.40.0.10 \}", text), host
        assert "tcp dport 9100 ip saddr @monitoring_v4 accept" in chain(text, "input"), host
        assert nft_check(tmp_path, text).returncode == 0, host
    node, gw, stage = (chain(texts[h], "input") for h in ("node1", "gw", "stage"))
    # vLLM's /metrics is on the engine port; DCGM's exporter on the nodes, nginx's on the gateway
    assert "tcp dport { 8000, 9400 } ip saddr @monitoring_v4 accept" in node
    assert "tcp dport 9113 ip saddr @monitoring_v4 accept" in gw and "9113" not in node + stage
    assert "9400" not in gw + stage
    # Prometheus and Alertmanager: the monitoring host, to the operators only
    assert "tcp dport { 9090, 9093 } ip saddr @admin_v4 accept" in gw and "9090" not in node + stage


def test_grafana_opens_on_the_monitoring_host_to_whoever_may_reach_prometheus(tmp_path: Path) -> None:
    plan = {"port": 8000, "monitoring": {"host": "gw"}}
    rendered = render(tmp_path, roles=["firewall"], groups=GROUPS, templates={"nft": "firewall/enclave.nft.j2"},
                      extra={**EXTRA, "enclave_plan": plan, "monitoring_grafana": True})
    texts = {host: files["nft"] for host, files in rendered.items()}
    gw = chain(texts["gw"], "input")
    assert "tcp dport { 9090, 9093, 3000 } ip saddr @admin_v4 accept" in gw
    assert "tcp dport { 9090, 9093, 3000 } ip6 saddr @admin_v6 accept" in gw
    assert nft_check(tmp_path, texts["gw"]).returncode == 0
    assert all("3000" not in texts[h] for h in ("node1", "stage"))


def test_without_a_planned_monitoring_host_no_exporter_is_reachable(rulesets: dict[str, str]) -> None:
    for host in ("node1", "gw", "stage"):
        assert re.search(r"set monitoring_v4 \{\n\t\ttype ipv4_addr; flags interval;\n", rulesets[host]), host
        assert "9090" not in rulesets[host]


def test_the_offline_kit_port_opens_on_the_staging_host_to_the_private_network_once_a_kit_is_imported(
        tmp_path: Path, rulesets: dict[str, str]) -> None:
    rendered = render(tmp_path, roles=["firewall"], groups=GROUPS, templates={"nft": "firewall/enclave.nft.j2"},
                      extra={**EXTRA, "offline_kit_sha256": "a" * 64, "offline_kit_port": 8091})
    texts = {host: files["nft"] for host, files in rendered.items()}
    assert "tcp dport 8091 ip saddr @egress_v4 accept" in chain(texts["stage"], "input")
    assert re.search(r"set egress_v4 \{[^}]*elements = \{ 10.40.0.0/24 \}", texts["stage"])
    assert nft_check(tmp_path, texts["stage"]).returncode == 0
    assert all("8091" not in texts[h] for h in ("node1", "gw"))
    # without an imported kit, no port of it anywhere
    assert all("8090" not in text for text in rulesets.values())
