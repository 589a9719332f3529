"""The node's rendered ruleset, loaded into a network namespace of the test's own and shown real packets.

A small network made of namespaces (named after this process, removed afterwards), all on one bridge:

    peer 10.40.0.12 ─┐                         ┌─ node 10.40.0.11 (node1's ruleset, routes to 10.50.0.0/24)
    stage 10.40.0.20 ┴── bridge (hub) ─────────┘      └── beyond 10.50.0.2

A TCP probe tells the firewall's verdict apart from the host's: "refused" means the packet reached the node (no one
listens there, so its kernel answered), "dropped" means a rule dropped it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.host_tools import require_tool
from tests.unit.role_render import render
from tests.unit.test_firewall_ruleset import EXTRA, GROUPS

PREFIX = f"efw{os.getpid() % 100000}"
PROBE = Path(__file__).with_name("firewall_probe.py")
HOSTS = {"node": ("10.40.0.11", "fd40::11"), "peer": ("10.40.0.12", "fd40::12"), "stage": ("10.40.0.20", "fd40::20")}


def ns(name: str) -> str:
    return f"{PREFIX}-{name}"


def run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout


def inside(name: str, *argv: str) -> str:
    return run("ip", "netns", "exec", ns(name), *argv)


def probe(name: str, *args: str) -> str:
    return inside(name, sys.executable, str(PROBE), *args).strip()


def counter(name: str) -> int:
    listed = json.loads(inside("node", "nft", "-j", "list", "counter", "inet", "enclave", name))
    return next(item["counter"]["packets"] for item in listed["nftables"] if "counter" in item)


def settled(name: str) -> int:
    """The counter once the namespaces' own start-up traffic (MLD reports, router solicitations) has stopped."""
    last = counter(name)
    for _ in range(20):
        time.sleep(0.5)
        now = counter(name)
        if now == last:
            return now
        last = now
    pytest.fail(f"counter {name} kept moving without the test sending anything")


def link_local(name: str) -> str:
    for _ in range(50):
        shown = json.loads(inside(name, "ip", "-j", "-6", "addr", "show", "dev", "eth0"))
        for info in shown[0].get("addr_info", []) if shown else []:
            if info.get("scope") == "link" and "local" in info and not info.get("tentative"):
                return info["local"]
        time.sleep(0.1)
    pytest.fail(f"{ns(name)}: no usable link-local address")


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("needs root to make network namespaces")
    require_tool("ip")
    require_tool("nft")
    ruleset = render(tmp_path_factory.mktemp("fw"), roles=["firewall"], groups=GROUPS,
                     templates={"nft": "firewall/enclave.nft.j2"}, extra=EXTRA, hosts="node1")["node1"]["nft"]
    path = tmp_path_factory.mktemp("fw-load") / "enclave.nft"
    path.write_text(ruleset)
    made: list[str] = []
    try:
        for name in ("hub", *HOSTS, "beyond"):
            run("ip", "netns", "add", ns(name))
            made.append(ns(name))
            inside(name, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
            inside(name, "ip", "link", "set", "lo", "up")
        inside("hub", "ip", "link", "add", "br0", "type", "bridge")
        inside("hub", "ip", "link", "set", "br0", "up")
        for index, (name, (v4, v6)) in enumerate(HOSTS.items()):
            run("ip", "link", "add", "eth0", "netns", ns(name), "type", "veth", "peer", "name", f"p{index}",
                "netns", ns("hub"))
            inside("hub", "ip", "link", "set", f"p{index}", "master", "br0", "up")
            inside(name, "ip", "addr", "add", f"{v4}/24", "dev", "eth0")
            inside(name, "ip", "addr", "add", f"{v6}/64", "dev", "eth0", "nodad")
            inside(name, "ip", "link", "set", "eth0", "up")
        run("ip", "link", "add", "eth1", "netns", ns("node"), "type", "veth", "peer", "name", "eth0",
            "netns", ns("beyond"))
        inside("node", "ip", "addr", "add", "10.50.0.1/24", "dev", "eth1")
        inside("node", "ip", "link", "set", "eth1", "up")
        inside("beyond", "ip", "addr", "add", "10.50.0.2/24", "dev", "eth0")
        inside("beyond", "ip", "link", "set", "eth0", "up")
        inside("beyond", "ip", "route", "add", "default", "via", "10.50.0.1")
        inside("stage", "ip", "route", "add", "10.50.0.0/24", "via", "10.40.0.11")
        # The node made a router (by a package or by hand): only the firewall stands between stage and beyond.
        inside("node", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        inside("node", "nft", "-f", str(path))
        yield
    finally:
        for name in reversed(made):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30, check=False)


@pytest.mark.usefixtures("network")
def test_staging_reaches_the_weights_ports_and_ssh_but_not_the_cluster_ports() -> None:
    verdicts = {port: probe("stage", "tcp", "10.40.0.11", str(port)) for port in (22, 7480, 8730, 6379, 13345, 29500,
                                                                                  40000, 8000)}
    assert verdicts == {22: "refused", 7480: "refused", 8730: "refused", 6379: "dropped", 13345: "dropped",
                        29500: "dropped", 40000: "dropped", 8000: "dropped"}


@pytest.mark.usefixtures("network")
def test_another_node_reaches_the_cluster_ports() -> None:
    verdicts = {port: probe("peer", "tcp", "10.40.0.11", str(port)) for port in (6379, 13345, 29500, 40000, 7480)}
    assert set(verdicts.values()) == {"refused"}, verdicts


@pytest.mark.usefixtures("network")
def test_traffic_routed_through_a_node_is_dropped_and_counted() -> None:
    before = settled("dropped_forward")
    assert probe("stage", "tcp", "10.50.0.2", "9") == "dropped"
    assert counter("dropped_forward") > before
    # The same probe with the forward chain gone crosses the node: the chain, not the path, stopped it.
    inside("node", "nft", "delete", "chain", "inet", "enclave", "forward")
    try:
        assert probe("stage", "tcp", "10.50.0.2", "9") == "refused"
    finally:
        inside("node", "nft", "add", "chain", "inet", "enclave", "forward",
               "{ type filter hook forward priority filter; policy drop; counter name dropped_forward; }")


@pytest.mark.usefixtures("network")
def test_router_adverts_pass_only_from_link_local_with_hop_limit_255() -> None:
    peer_link_local = link_local("peer")
    before = settled("dropped_ingress")
    probe("peer", "ra", "fd40::12", "fd40::11", "255", "5")
    probe("peer", "ra", peer_link_local, "fd40::11", "64", "5", "eth0")
    routed = settled("dropped_ingress")
    assert routed - before == 10, "adverts from a routable source or with a hop limit below 255 must be dropped"
    probe("peer", "ra", peer_link_local, "fd40::11", "255", "5", "eth0")
    assert settled("dropped_ingress") == routed, "adverts from the link itself must pass"


@pytest.mark.usefixtures("network")
def test_icmpv6_echo_is_rate_limited() -> None:
    answered = int(probe("peer", "echo6", "fd40::11", "200"))
    # 50/second with nft's default burst of 5: a burst of 200 gets a handful of answers, not all of them.
    assert 1 <= answered <= 40, answered
