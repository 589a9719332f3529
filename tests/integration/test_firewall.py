"""The firewall on the session's deployed sandbox: an outside host of the test's own is reachable from a node
only with the firewall off; cluster traffic still flows with it on; after the deploy and 50 requests through
the gateway, no host has tried to reach a non-private address (nftables counter `egress_public`)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from enclave.checks.runner import run_checks
from enclave.sandbox import Sandbox, SandboxSpec
from tests.integration.conftest import SANDBOX, STATE, ssh
from tests.integration.nethelpers import (
    OUTSIDE_GREETING,
    Gateway,
    Outside,
    completion_body,
    counters,
    engines_serve,
    host_address,
    outside_host,
    served_model,
    tcp_probe,
    tcp_reaches,
)

HOSTS = ("gateway", "node1", "node2")


@pytest.fixture(scope="module")
def spec(deployed: subprocess.CompletedProcess[str]) -> SandboxSpec:
    recorded = Sandbox(SANDBOX, state_root=STATE).recorded_spec()
    assert recorded is not None
    return recorded


@pytest.fixture
def outside(spec: SandboxSpec) -> Iterator[Outside]:
    with outside_host(spec) as where:
        yield where


@pytest.fixture
def firewall_restored(inventory: Path) -> Iterator[None]:
    yield
    ssh(inventory, "node1", "systemctl start enclave-firewall.service")
    assert "egress_public" in counters(inventory, "node1"), "node1's firewall did not come back"


def test_zero_egress_attempts_after_deploy_and_50_requests(spec: SandboxSpec, inventory: Path) -> None:
    # Runs first in this module: the outside test below restarts node1's firewall, which resets its counters.
    gateway = Gateway.of(inventory)
    if not engines_serve(gateway):
        pytest.skip("site.yml has no engine phase yet and no engine answers: nothing to send 50 requests to")
    for host in HOSTS:
        route = ssh(inventory, host, "ip -4 route show default").stdout
        # Without a default route an attempt fails in connect() before nftables sees it, and zero means nothing.
        assert f"via {spec.sink_address}" in route, f"{host} has no default route to the sink: {route!r}"
    model = served_model(gateway)
    statuses = [gateway.request("POST", "/v1/completions", completion_body(model))[0] for _ in range(50)]
    assert statuses == [200] * 50, f"requests through the gateway: {statuses}"
    seen = {host: counters(inventory, host) for host in HOSTS}
    since = {host: ssh(inventory, host, "systemctl show -P ActiveEnterTimestamp enclave-firewall.service").stdout
             .strip() for host in HOSTS}
    for host in HOSTS:
        print(f"egress attempts towards non-private addresses from {host}: {seen[host]['egress_public']} "
              f"(dropped egress {seen[host]['dropped_egress']}; firewall loaded {since[host]})")
    assert {h: c["egress_public"] for h, c in seen.items()} == dict.fromkeys(HOSTS, 0)


def test_outside_reachable_only_with_the_firewall_off(outside: Outside, inventory: Path,
                                                      firewall_restored: None) -> None:
    ssh(inventory, "node1", "systemctl stop enclave-firewall.service")
    assert ssh(inventory, "node1", "nft list table inet enclave", check=False).returncode != 0
    assert tcp_reaches(inventory, "node1", outside.address, outside.port, expect=OUTSIDE_GREETING), \
        "with its firewall off, node1 should reach the test's outside host: the test's network is broken"

    ssh(inventory, "node1", "systemctl start enclave-firewall.service")
    before = counters(inventory, "node1")
    assert not tcp_reaches(inventory, "node1", outside.address, outside.port), \
        "with its firewall on, node1 reached a non-private address"
    after = counters(inventory, "node1")
    print(f"node1 -> {outside.address}:{outside.port} with the firewall on: egress_public "
          f"{before['egress_public']} -> {after['egress_public']}, dropped_egress "
          f"{before['dropped_egress']} -> {after['dropped_egress']}")
    # The attempt was seen and dropped: the zero of the test above is a measurement, not a blind spot.
    assert after["egress_public"] > before["egress_public"]
    assert after["dropped_egress"] > before["dropped_egress"]
    # node2's firewall never went down: it cannot reach the outside either.
    assert not tcp_reaches(inventory, "node2", outside.address, outside.port)


def test_cluster_traffic_flows_with_the_firewall_on(inventory: Path, deployed: subprocess.CompletedProcess[str]
                                                    ) -> None:
    gateway, node2 = host_address(inventory, "gateway"), host_address(inventory, "node2")
    for host in HOSTS:
        assert ssh(inventory, host, "systemctl is-active enclave-firewall.service").stdout.strip() == "active"
    assert tcp_reaches(inventory, "node1", node2, 22), "node1 cannot open SSH to node2 (its cluster peer)"
    assert tcp_reaches(inventory, "node1", gateway, 443), "node1 cannot reach the gateway's HTTPS port"
    assert tcp_reaches(inventory, "node2", gateway, 22), "node2 cannot reach staging (the gateway) over SSH"
    # Staging seeds the weights to the nodes on the relay and rsync ports: open, or refused when nothing listens
    # between deploys, but never filtered.
    for port in (7480, 8730):
        assert tcp_probe(inventory, "gateway", node2, port) in ("open", "refused"), f"staging -> node2:{port} filtered"
    # A client port the node does not open to its peers is filtered.
    assert tcp_probe(inventory, "node1", node2, 9999) == "filtered"
    # Staging joins no replica: the cluster's Ray, RPC and rendezvous ports are open to the other node only.
    for port in (6379, 13345, 29500):
        assert tcp_probe(inventory, "node1", node2, port) in ("open", "refused"), f"node1 -> node2:{port} filtered"
        assert tcp_probe(inventory, "gateway", node2, port) == "filtered", f"staging -> node2:{port} not filtered"


# -- the shipped checks (`enclave verify`) fail on each fault they exist for --------------------------------
FIREWALL_FAULTS = {
    "flushed": ("nft delete table inet enclave",
                {"ruleset_loaded", "ingress_egress_and_forward_policy_drop", "dropped_egress_is_counted"}),
    "egress policy accept": ("nft 'chain inet enclave output { policy accept; }'",
                             {"ingress_egress_and_forward_policy_drop"}),
    "drops not counted": ("nft delete rule inet enclave output handle $(nft -a list chain inet enclave output"
                          " | sed -n 's/.*counter name .dropped_egress. # handle \\([0-9]*\\)$/\\1/p')",
                          {"dropped_egress_is_counted"}),
    "not enabled at boot": ("systemctl disable --quiet enclave-firewall.service", {"ruleset_loaded"}),
    "forwarding allowed": ("nft 'chain inet enclave forward { policy accept; }'",
                           {"ingress_egress_and_forward_policy_drop"}),
}


@pytest.mark.parametrize("fault", list(FIREWALL_FAULTS))
def test_shipped_firewall_checks_fail_on_their_fault(fault: str, inventory: Path,
                                                     deployed: subprocess.CompletedProcess[str]) -> None:
    breaks, expected = FIREWALL_FAULTS[fault]
    clean, _ = run_checks(inventory, hosts=["node2"], modules=("test_firewall.py",))
    assert {r.check: r.outcome for r in clean} == dict.fromkeys(
        ("ruleset_loaded", "ingress_egress_and_forward_policy_drop", "dropped_egress_is_counted"), "passed")
    try:
        ssh(inventory, "node2", breaks)
        results, _ = run_checks(inventory, hosts=["node2"], modules=("test_firewall.py",))
    finally:
        ssh(inventory, "node2", "systemctl enable --quiet enclave-firewall.service"
                                " && systemctl reload enclave-firewall.service")
    failed = {r.check for r in results if r.outcome == "failed"}
    assert failed == expected, {r.check: r.message for r in results}
    after, _ = run_checks(inventory, hosts=["node2"], modules=("test_firewall.py",))
    assert all(r.outcome == "passed" for r in after), "the repair did not restore node2's firewall"
