"""Bridge, network namespaces and veth pairs, made and removed by name with iproute2.

Namespaces, links and their mounts outlive the processes that made them (a killed session leaves them
behind), so every function here is idempotent and tolerates a half-made state.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from enclave.errors import SandboxError
from enclave.sandbox import system

NETNS_DIR = Path("/run/netns")


def link_exists(name: str) -> bool:
    return system.run(["ip", "link", "show", "dev", name], check=False).returncode == 0


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def list_links(prefix: str) -> list[str]:
    out = system.run(["ip", "-j", "link", "show"]).stdout
    return sorted(link["ifname"] for link in json.loads(out or "[]") if link["ifname"].startswith(prefix))


def list_netns(prefix: str) -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def check_subnet_free(network: ipaddress.IPv4Network, bridge: str) -> None:
    """Refuse a subnet that this machine already routes through anything but our own bridge."""
    routes = json.loads(system.run(["ip", "-j", "-4", "route", "show"]).stdout or "[]")
    for route in routes:
        dst = route.get("dst", "")
        if dst in ("default", "") or route.get("dev") == bridge:
            continue
        try:
            other = ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False)
        except ValueError:
            continue
        if other.overlaps(network):
            raise SandboxError(f"subnet {network} overlaps {other} already routed via {route.get('dev')}; "
                               "choose another with --subnet")


def ensure_bridge(name: str, address: ipaddress.IPv4Address, network: ipaddress.IPv4Network) -> None:
    if not link_exists(name):
        system.run(["ip", "link", "add", name, "type", "bridge"])
    cidr = f"{address}/{network.prefixlen}"
    addrs = json.loads(system.run(["ip", "-j", "addr", "show", "dev", name]).stdout or "[]")
    present = {f"{a['local']}/{a['prefixlen']}" for link in addrs for a in link.get("addr_info", [])}
    if cidr not in present:
        system.run(["ip", "addr", "add", cidr, "dev", name])
    system.run(["ip", "link", "set", name, "up"])


def delete_link(name: str) -> bool:
    """True when this call removed the link. A veth vanishes by itself once its peer's namespace is gone,
    possibly between our look and our delete: that counts as gone, not as an error."""
    if not link_exists(name):
        return False
    proc = system.run(["ip", "link", "del", name], check=False)
    if proc.returncode != 0 and link_exists(name):
        raise SandboxError(f"cannot delete link {name}: {proc.stderr.strip()}")
    return proc.returncode == 0


def delete_netns(name: str) -> bool:
    if netns_exists(name):
        system.run(["ip", "netns", "del", name])
        return True
    return False


def netns_pids(name: str) -> list[int]:
    """Every process whose network namespace is `name`: the node's whole process tree, found by name."""
    if not netns_exists(name):
        return []
    out = system.run(["ip", "netns", "pids", name], check=False).stdout
    return [int(p) for p in out.split()]


def plumb_host(netns: str, veth_host: str, veth_peer: str, bridge: str,
               address: ipaddress.IPv4Address, network: ipaddress.IPv4Network) -> None:
    """A fresh namespace with `eth0` (the node's private NIC) on the bridge. Leftovers are replaced."""
    delete_link(veth_host)
    delete_link(veth_peer)
    delete_netns(netns)
    system.run(["ip", "netns", "add", netns])
    system.run(["ip", "link", "add", veth_host, "type", "veth", "peer", "name", veth_peer])
    system.run(["ip", "link", "set", veth_peer, "netns", netns])
    system.run(["ip", "-n", netns, "link", "set", veth_peer, "name", "eth0"])
    system.run(["ip", "-n", netns, "addr", "add", f"{address}/{network.prefixlen}", "dev", "eth0"])
    system.run(["ip", "-n", netns, "link", "set", "lo", "up"])
    system.run(["ip", "-n", netns, "link", "set", "eth0", "up"])
    system.run(["ip", "link", "set", veth_host, "master", bridge])
    system.run(["ip", "link", "set", veth_host, "up"])


def ensure_default_route(netns: str, via: ipaddress.IPv4Address) -> None:
    """The namespace's default route through `via` (idempotent; also fixes a node made before the sink)."""
    system.run(["ip", "-n", netns, "route", "replace", "default", "via", str(via), "dev", "eth0"])


def host_plumbed(netns: str, veth_host: str, bridge: str) -> bool:
    if not (netns_exists(netns) and link_exists(veth_host)):
        return False
    info = json.loads(system.run(["ip", "-j", "link", "show", "dev", veth_host]).stdout or "[{}]")
    return bool(info) and info[0].get("master") == bridge
