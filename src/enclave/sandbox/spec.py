"""The shape of a sandbox: its name, subnet and hosts, and the names of everything it creates on this machine.

Every name is derived from the sandbox name, so `down` (and `up` after a crash) finds its own leftovers by name
and never touches anything else.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from enclave.errors import UsageError

DEFAULT_NAME = "default"
DEFAULT_INFERENCE_NODES = 2
MAX_INFERENCE_NODES = 16
# 10.213.0.0/16 is rarely routed anywhere; each sandbox name gets its own /24 inside it unless told otherwise.
_SUBNET_BASE = ipaddress.IPv4Network("10.213.0.0/16")
_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,6}$")
GATEWAY_HOST = "gateway"


@dataclass(frozen=True)
class SandboxHost:
    name: str
    index: int  # 0 for the gateway/staging host, k for nodek
    address: ipaddress.IPv4Address
    groups: tuple[str, ...]

    def netns(self, sandbox: str) -> str:
        return f"enclave-{sandbox}-{self.name}"

    def veth_host(self, sandbox: str) -> str:
        return f"enc-{sandbox}-{self.index}"  # <= 14 characters; Linux allows 15

    def veth_peer(self, sandbox: str) -> str:
        return f"encp-{sandbox}-{self.index}"  # renamed to eth0 once inside the namespace

    def machine(self, sandbox: str) -> str:
        return f"enclave-{sandbox}-{self.name}"


@dataclass(frozen=True)
class SandboxSpec:
    name: str = DEFAULT_NAME
    inference_nodes: int = DEFAULT_INFERENCE_NODES
    subnet: ipaddress.IPv4Network | None = None

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise UsageError(f"sandbox name {self.name!r}: use 1-7 lower-case letters or digits, starting "
                             "with a letter (it becomes part of interface names, which Linux caps at 15)")
        if not 1 <= self.inference_nodes <= MAX_INFERENCE_NODES:
            raise UsageError(f"--nodes {self.inference_nodes}: the sandbox holds 1 to {MAX_INFERENCE_NODES} "
                             "inference nodes")
        if self.subnet is not None and (self.subnet.prefixlen > 27 or not self.subnet.is_private):
            raise UsageError(f"subnet {self.subnet}: give a private IPv4 network of /27 or larger")

    @property
    def network(self) -> ipaddress.IPv4Network:
        if self.subnet is not None:
            return self.subnet
        # A stable /24 per name, so two sandboxes (the operator's demo and the tests) can run side by side.
        offset = sum(self.name.encode()) % 200 + 1
        return list(_SUBNET_BASE.subnets(new_prefix=24))[offset]

    @property
    def controller_address(self) -> ipaddress.IPv4Address:
        return self.network.network_address + 1

    @property
    def sink_address(self) -> ipaddress.IPv4Address:
        """Where the nodes' default route points: an address on the bridge that nobody holds. A packet towards
        the outside world is built, passes the node's nftables (which count it) and dies unanswered at the
        neighbour lookup; without a default route connect() fails before any firewall sees it. A test's
        stand-in for the outside world takes this address to become reachable."""
        return self.network.network_address + 2

    @property
    def bridge(self) -> str:
        return f"enc-{self.name}"

    @property
    def hosts(self) -> tuple[SandboxHost, ...]:
        base = self.network.network_address
        gateway = SandboxHost(GATEWAY_HOST, 0, base + 10, ("enclave_gateway", "enclave_staging"))
        nodes = tuple(SandboxHost(f"node{k}", k, base + 10 + k, ("enclave_nodes",))
                      for k in range(1, self.inference_nodes + 1))
        return (gateway, *nodes)

    def host(self, name: str) -> SandboxHost:
        """A host by name, also a node beyond the current count (one a smaller `up` must remove)."""
        for host in self.hosts:
            if host.name == name:
                return host
        if name.startswith("node") and name.removeprefix("node").isdigit():
            index = int(name.removeprefix("node"))
            return SandboxHost(name, index, self.network.network_address + 10 + index, ("enclave_nodes",))
        raise UsageError(f"sandbox {self.name!r} has no host {name!r}")
