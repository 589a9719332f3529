"""Packets for the firewall's packet tests, sent from inside a test namespace (`ip netns exec NS python -m ...`).

    tcp HOST PORT                   print open, refused (reached the host: the firewall let it in) or dropped
    echo6 DST COUNT                 send COUNT ICMPv6 echo requests at once, print how many were answered
    ra SRC DST HOPS COUNT [IFNAME]  send COUNT router adverts from SRC (link-local needs IFNAME) with hop limit HOPS

Stdlib only, bounded in count and time: every address is one the test made in its own namespaces.
"""

from __future__ import annotations

import socket
import struct
import sys
import time

ECHO_REQUEST, ECHO_REPLY, ROUTER_ADVERT = 128, 129, 134


def tcp(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=1.5):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "dropped"


def echo6(dst: str, count: int) -> int:
    ident = 0x4E43
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
        # The kernel fills in the ICMPv6 checksum of a raw socket's packets.
        for seq in range(count):
            sock.sendto(struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, ident, seq) + b"enclave", (dst, 0))
        answered: set[int] = set()
        sock.settimeout(0.2)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                data = sock.recv(2048)
            except TimeoutError:
                break
            kind, _code, _sum, got_ident, seq = struct.unpack("!BBHHH", data[:8])
            if kind == ECHO_REPLY and got_ident == ident:
                answered.add(seq)
        return len(answered)


def router_advert(src: str, dst: str, hops: int, count: int, ifname: str = "") -> None:
    scope = socket.if_nametoindex(ifname) if ifname else 0
    # Cur hop limit 64, no flags, router lifetime 0 (not a default router: the advert changes nothing it reaches).
    advert = struct.pack("!BBHBBHII", ROUTER_ADVERT, 0, 0, 64, 0, 0, 0, 0)
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, hops)
        sock.bind((src, 0, 0, scope))
        for _ in range(count):
            sock.sendto(advert, (dst, 0, 0, scope))


def main(argv: list[str]) -> None:
    verb, *args = argv
    if verb == "tcp":
        print(tcp(args[0], int(args[1])))
    elif verb == "echo6":
        print(echo6(args[0], int(args[1])))
    elif verb == "ra":
        router_advert(args[0], args[1], int(args[2]), int(args[3]), *args[4:5])
    else:
        raise SystemExit(f"unknown probe {verb!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
