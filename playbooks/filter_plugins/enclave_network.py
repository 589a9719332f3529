"""Filters for addresses on the cluster's private network (no dependency on ansible.utils or netaddr)."""

from __future__ import annotations

import ipaddress
from typing import Any

from ansible.errors import AnsibleFilterError


def private_address(hostvars: dict[str, Any], network: str) -> str:
    """The host's address inside `network`: from its gathered facts, else its ansible_host."""
    net = ipaddress.ip_network(network, strict=False)
    facts = hostvars.get("ansible_facts") or {}
    candidates = [*(facts.get("all_ipv4_addresses") or []), str(hostvars.get("ansible_host", ""))]
    for candidate in candidates:
        try:
            if ipaddress.ip_address(candidate) in net:
                return candidate
        except ValueError:
            continue
    name = hostvars.get("inventory_hostname", "?")
    raise AnsibleFilterError(f"host {name}: none of its addresses ({', '.join(c for c in candidates if c) or 'none'})"
                             f" is in enclave_private_network {network}; set ansible_host to its private address"
                             " or fix enclave_private_network")


def private_addresses(hosts: list[dict[str, Any]], network: str) -> list[str]:
    return sorted({private_address(h, network) for h in hosts}, key=ipaddress.ip_address)


def split_family(cidrs: list[str], family: int) -> list[str]:
    """The CIDRs of one IP family (4 or 6), normalised; a malformed one fails naming itself."""
    out = []
    for cidr in cidrs:
        try:
            net = ipaddress.ip_network(str(cidr), strict=False)
        except ValueError as exc:
            raise AnsibleFilterError(f"{cidr!r} is not an address or CIDR: {exc}") from None
        if net.version == family:
            out.append(str(net.network_address) if net.num_addresses == 1 else str(net))
    return out


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "enclave_private_address": private_address,
            "enclave_private_addresses": private_addresses,
            "enclave_cidrs_of_family": split_family,
        }
