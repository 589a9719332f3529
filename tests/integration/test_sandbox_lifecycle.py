"""sandbox up/down on a sandbox of its own: idempotent up, recovery after its processes were killed (as
between a session and CI), and a down that leaves no namespace, link, mount or process behind."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from enclave.pids import signal_pids
from enclave.sandbox import Sandbox, SandboxSpec, network, system
from tests.integration.conftest import STATE, enclave

NAME = "lcycle"


def recorded_pids(box: Sandbox) -> dict[str, int]:
    state = box._load()
    pids = {f"node:{k}": v for k, v in state.get("nodes", {}).items()}
    pids.update({f"service:{k}": v["pid"] for k, v in state.get("services", {}).items()})
    return pids


def leftovers(box: Sandbox) -> list[str]:
    found = [f"netns {ns}" for ns in network.list_netns(f"enclave-{NAME}-")]
    found += [f"link {ln}" for ln in network.list_links(f"enc-{NAME}")]
    found += [f"link {ln}" for ln in network.list_links(f"encp-{NAME}-")]
    controller = f"--bind {SandboxSpec(name=NAME).controller_address} "
    mounts = Path("/proc/self/mountinfo").read_text()
    found += [f"mount {line.split()[4]}" for line in mounts.splitlines()
              if f"enclave-{NAME}-" in line or str(box.home) in line]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if f"enclave-{NAME}-" in cmdline or str(box.home) in cmdline or controller in cmdline:
                found.append(f"process {proc.name}: {cmdline[:80]}")
    found += [f"dir {p}" for p in Path("/run/systemd/nspawn/propagate").glob(f"enclave-{NAME}-*")]
    if box.home.exists():
        found.append(f"state {box.home}")
    return found


def default_routes(box: Sandbox) -> dict[str, str]:
    """Each host's default route; the sink (SandboxSpec.sink_address) makes egress attempts reach nftables."""
    spec = box.recorded_spec()
    assert spec is not None
    return {h.name: system.run(["ip", "-n", h.netns(NAME), "-4", "route", "show", "default"]).stdout.strip()
            for h in spec.hosts}


@pytest.fixture
def box() -> Sandbox:
    sandbox = Sandbox(NAME, state_root=STATE)
    yield sandbox
    sandbox.down()


def test_up_is_idempotent_recovers_from_killed_processes_and_down_leaves_nothing(box: Sandbox) -> None:
    status = box.up(nodes=1)
    assert status.healthy
    assert [h.name for h in status.hosts] == ["gateway", "node1"]
    first = recorded_pids(box)
    sink = SandboxSpec(name=NAME).sink_address
    assert default_routes(box) == {h: f"default via {sink} dev eth0" for h in ("gateway", "node1")}

    again = enclave("sandbox", "up", "--name", NAME, check=True)
    assert "starting" not in again.stderr, "a healthy sandbox is left as it is"
    assert recorded_pids(box) == first

    # What the end of a session does: every process killed, namespaces, links and overlays left behind.
    signal_pids(list(first.values()), signal.SIGKILL)
    assert not system.wait_gone(list(first.values()), 10)
    assert network.list_netns(f"enclave-{NAME}-"), "the namespaces outlive the processes"
    status = box.up()
    assert status.healthy, status
    assert set(recorded_pids(box).values()).isdisjoint(first.values())
    assert default_routes(box) == {h: f"default via {sink} dev eth0" for h in ("gateway", "node1")}

    listing = enclave("sandbox", "status", "--name", NAME)
    assert listing.returncode == 0 and "node1" in listing.stdout and "running" in listing.stdout

    down = enclave("sandbox", "down", "--name", NAME, check=True)
    assert "nodes stopped: gateway, node1" in down.stdout
    deadline = time.monotonic() + 10
    while leftovers(box) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert leftovers(box) == []
    assert enclave("sandbox", "status", "--name", NAME).returncode == 1


def test_down_on_a_sandbox_that_never_came_up_is_harmless(box: Sandbox) -> None:
    result = enclave("sandbox", "down", "--name", NAME, check=True)
    assert "nodes stopped: none" in result.stdout
    assert leftovers(box) == []
