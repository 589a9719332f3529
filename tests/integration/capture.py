"""A packet capture on the sandbox's bridge with the standard library: an AF_PACKET socket on the bridge, made
promiscuous so frames one port forwards to another pass it too (a Linux bridge hands every frame up to its own
device while it is promiscuous), read in a thread. No tcpdump needed, nothing written to disk: it keeps only each
IP packet's source and destination, to say which of them left the sandbox's private network."""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
IPV4, IPV6, VLAN = 0x0800, 0x86DD, 0x8100
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def addresses(frame: bytes) -> tuple[Address, Address] | None:
    """(source, destination) of an Ethernet frame carrying IPv4 or IPv6 (one VLAN tag allowed), else None."""
    offset, ethertype = 14, int.from_bytes(frame[12:14], "big")
    if ethertype == VLAN:
        offset, ethertype = 18, int.from_bytes(frame[16:18], "big")
    if ethertype == IPV4 and len(frame) >= offset + 20:
        return (ipaddress.IPv4Address(frame[offset + 12:offset + 16]),
                ipaddress.IPv4Address(frame[offset + 16:offset + 20]))
    if ethertype == IPV6 and len(frame) >= offset + 40:
        return (ipaddress.IPv6Address(frame[offset + 8:offset + 24]),
                ipaddress.IPv6Address(frame[offset + 24:offset + 40]))
    return None


def stays_inside(address: Address, network: ipaddress.IPv4Network) -> bool:
    """The sandbox's own network, or traffic that never leaves a link (multicast, link-local, unspecified,
    broadcast: DHCP, neighbour discovery)."""
    if isinstance(address, ipaddress.IPv4Address) and address in network:
        return True
    return (address.is_multicast or address.is_link_local or address.is_unspecified
            or address == ipaddress.IPv4Address("255.255.255.255"))


@dataclass
class BridgeCapture:
    bridge: str
    network: ipaddress.IPv4Network
    inside: Counter[tuple[str, str]] = field(default_factory=Counter)
    outside: Counter[tuple[str, str]] = field(default_factory=Counter)
    frames: int = 0

    def __post_init__(self) -> None:
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.bind((self.bridge, 0))
        membership = struct.pack("iHH8s", socket.if_nametoindex(self.bridge), PACKET_MR_PROMISC, 0, b"")
        self._sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, membership)  # dropped when the socket closes
        self._sock.settimeout(0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self._sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.frames += 1
            found = addresses(frame)
            if found is None:
                continue
            source, destination = found
            pair = (str(source), str(destination))
            if stays_inside(source, self.network) and stays_inside(destination, self.network):
                self.inside[pair] += 1
            else:
                self.outside[pair] += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
