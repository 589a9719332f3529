"""What the firewall, gateway and day-2 tests share: the firewall's counters read on a host, a TCP probe from a
host, the sandbox's test "outside" host, a client of the gateway that trusts the kit's CA, and which engine the
gateway sent each request to."""

from __future__ import annotations

import http.client
import json
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from enclave.inventory_layout import ca_cert
from enclave.pids import signal_pids
from enclave.sandbox import network, system
from enclave.sandbox.client_keys import read_gateway_keys
from enclave.sandbox.spec import SandboxSpec
from tests.integration.conftest import REPO, ssh

# A documentation-range address (RFC 5737): the stand-in for "anywhere outside the site".
OUTSIDE_ADDRESS = "198.51.100.7"
OUTSIDE_PORT = 8080
OUTSIDE_GREETING = "outside"
ACCESS_LOG = "/var/log/nginx/enclave-access.log"

# Accepts connections and greets each one: an "internet" service the nodes must never reach.
_OUTSIDE_SERVER = f"""
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(({OUTSIDE_ADDRESS!r}, {OUTSIDE_PORT}))
s.listen(16)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"{OUTSIDE_GREETING}\\n")
    c.close()
"""


def host_address(inventory: Path, host: str) -> str:
    data = yaml.safe_load(inventory.read_text())["all"]["children"]
    return next(group["hosts"][host]["ansible_host"] for group in data.values()
                if host in group["hosts"] and group["hosts"][host])


def counters(inventory: Path, host: str) -> dict[str, int]:
    """Packets seen by each named counter of the kit's nftables table (a missing table fails the test)."""
    out = ssh(inventory, host, "nft -j list counters table inet enclave").stdout
    return {entry["counter"]["name"]: int(entry["counter"]["packets"])
            for entry in json.loads(out)["nftables"] if "counter" in entry}


def tcp_reaches(inventory: Path, host: str, address: str, port: int, *, expect: str | None = None,
                wait_s: int = 5) -> bool:
    """True when `host` opens a TCP connection to address:port (and reads `expect` from it when given)."""
    read = f" && head -c {len(expect)} <&3" if expect else ""
    script = f"timeout {wait_s} bash -c 'exec 3<>/dev/tcp/{address}/{port}{read}'"
    proc = ssh(inventory, host, script, check=False)
    return proc.returncode == 0 and (expect is None or proc.stdout == expect)


def tcp_probe(inventory: Path, host: str, address: str, port: int, wait_s: int = 5) -> str:
    """"open", "refused" (an RST at once: the firewall let the SYN through to a port nobody listens on) or
    "filtered" (no answer: dropped on the way)."""
    script = f"timeout {wait_s} bash -c 'exec 3<>/dev/tcp/{address}/{port}' 2>&1; echo rc=$?"
    out = ssh(inventory, host, script, check=False).stdout
    if out.strip().endswith("rc=0"):
        return "open"
    return "refused" if "Connection refused" in out else "filtered"


@dataclass(frozen=True)
class Outside:
    address: str
    port: int


@contextmanager
def outside_host(spec: SandboxSpec) -> Iterator[Outside]:
    """A namespace on the sandbox's bridge holding the sink address (where the nodes' default route points) and
    a documentation-range address, with a TCP service on it: the outside world as the nodes would see it.
    Named after the sandbox, so `sandbox down` also finds it; removed here whatever happens."""
    netns, veth, peer = f"enclave-{spec.name}-outside", f"{spec.bridge}-out", f"encp-{spec.name}-out"
    server: subprocess.Popen[str] | None = None
    try:
        network.plumb_host(netns, veth, peer, spec.bridge, spec.sink_address, spec.network)
        system.run(["ip", "-n", netns, "addr", "add", f"{OUTSIDE_ADDRESS}/32", "dev", "eth0"])
        server = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", _OUTSIDE_SERVER],
                                  stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        yield Outside(OUTSIDE_ADDRESS, OUTSIDE_PORT)
    finally:
        if server is not None:
            signal_pids([server.pid], signal.SIGKILL)
            server.wait(10)
        network.delete_link(veth)
        network.delete_netns(netns)


# -- the gateway, as a client sees it -----------------------------------------------------------------
@dataclass(frozen=True)
class Gateway:
    address: str
    port: int
    ca: Path
    keys: dict[str, str]

    @classmethod
    def of(cls, inventory: Path) -> Gateway:
        return cls(host_address(inventory, "gateway"), 443, ca_cert(inventory),
                   read_gateway_keys(inventory.parent))

    @property
    def key(self) -> str:
        return self.keys["sandbox-tests"]

    def context(self) -> ssl.SSLContext:
        """Verifies the gateway's certificate against the kit's CA alone, host name included."""
        return ssl.create_default_context(cafile=str(self.ca))

    def connection(self, timeout: float = 120) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.address, self.port, context=self.context(), timeout=timeout)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, *, key: str | None = "",
                timeout: float = 120) -> tuple[int, dict[str, str], bytes]:
        """One request; key "" means this client's valid key, None no Authorization header at all."""
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key or self.key}"
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()


def served_model(gateway: Gateway) -> str:
    status, _, body = gateway.request("GET", "/v1/models")
    assert status == 200, f"/v1/models through the gateway: {status} {body[:300]!r}"
    return json.loads(body)["data"][0]["id"]


def completion_body(model: str, *, stream: bool = False, max_tokens: int = 4) -> dict[str, Any]:
    return {"model": model, "prompt": "Hello", "max_tokens": max_tokens, "temperature": 0, "stream": stream}


def send_completions(gateway: Gateway, model: str, request_ids: list[str]) -> None:
    """One completion per id, sent through the gateway with that X-Request-Id; each must answer 200."""
    for request_id in request_ids:
        conn = gateway.connection()
        try:
            conn.request("POST", "/v1/completions", body=json.dumps(completion_body(model)),
                         headers={"Authorization": f"Bearer {gateway.key}", "Content-Type": "application/json",
                                  "X-Request-Id": request_id})
            response = conn.getresponse()
            body = response.read()
            assert response.status == 200, f"{request_id}: HTTP {response.status} {body[:300]!r}"
        finally:
            conn.close()


def upstreams(inventory: Path, request_ids: list[str]) -> dict[str, str]:
    """request id -> the engine address(es) the gateway tried for it ("a, b" when it moved on), from its access log."""
    found: dict[str, str] = {}
    for line in ssh(inventory, "gateway", f"cat {ACCESS_LOG}").stdout.splitlines():
        entry = json.loads(line)
        if entry["request_id"] in request_ids:
            found[entry["request_id"]] = entry["upstream"]
    return found


def answering_engines(gateway: Gateway, inventory: Path, model: str, *, count: int = 6) -> set[str]:
    """The engine addresses that answered `count` completions sent through the gateway (200 each)."""
    ids = [f"which-engine-{uuid.uuid4().hex}" for _ in range(count)]
    send_completions(gateway, model, ids)
    found = upstreams(inventory, ids)
    assert len(found) == count, f"the access log has {len(found)} of the {count} requests"
    return {upstream.split(", ")[-1] for upstream in found.values()}


def engine_phase_in_site() -> bool:
    """Whether the deploy runs engines (the engine role landed in site.yml): the gateway has something to serve."""
    site = yaml.safe_load((REPO / "playbooks" / "site.yml").read_text())
    return any(p.get("ansible.builtin.import_playbook") == "engine.yml" for p in site)


def engines_serve(gateway: Gateway) -> bool:
    """Whether to test what needs engines: the deploy runs them (then they must answer), or engines were
    deployed on this sandbox by other means and answer /health through the gateway."""
    if engine_phase_in_site():
        return True
    try:
        return gateway.request("GET", "/health", key=None, timeout=30)[0] == 200
    except OSError:
        return False


def wait_until(predicate: Any, timeout: float, step: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
