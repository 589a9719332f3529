"""Scale-out on the session's deployed sandbox: a third inference node added to the inventory joins through
`enclave deploy`. It is provisioned, takes the model from its peers (the relay starts at a node that holds the
revision, verified; the staging host sends nothing), starts its engine and enters the gateway's rotation, while the
engines already serving are not restarted.

`grows_sandbox` orders it after every test that expects two nodes; the teardown test, last, removes all three.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from enclave.plan import planfile
from enclave.sandbox import Sandbox
from tests.integration.conftest import SANDBOX, STATE, enclave, ssh
from tests.integration.nethelpers import Gateway, answering_engines, host_address, served_model
from tests.integration.test_weights import current, last_transfer, planned_revision

UNIT = "enclave-engine.service"
PEERS = ("node1", "node2")


def engine_pid(inventory: Path, host: str) -> str:
    return ssh(inventory, host, f"systemctl show {UNIT} -p MainPID --value").stdout.strip()


@pytest.mark.grows_sandbox
def test_a_third_node_joins_through_deploy_with_weights_from_its_peers(
        deployed: subprocess.CompletedProcess[str], inventory: Path) -> None:
    revision = planned_revision(inventory)
    pids = {h: engine_pid(inventory, h) for h in PEERS}
    assert all(p not in ("", "0") for p in pids.values()), pids

    grown = Sandbox(SANDBOX, state_root=STATE).up(nodes=3, report=lambda m: print(f"sandbox: {m}"))
    assert grown.inventory == inventory and "node3" in inventory.read_text()

    proc = enclave("deploy", "-i", str(inventory), timeout=1800)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]

    # The weights: node3 holds the planned revision, verified, and got its bytes by the relay from a peer.
    assert current(inventory, "node3") == revision
    record = last_transfer(inventory, "node3")
    print(f"node3 received {record.get('bytes_moved')} bytes: relay {record.get('relay')}, rsync {record.get('rsync')}")
    assert record["revision"] == revision
    assert (record.get("relay") or {}).get("source") in PEERS, record
    assert record.get("rsync") is None, f"node3 fetched files from the staging host by rsync: {record}"
    assert int(record["bytes_moved"]) > 0 and int(record["relay"]["files_written"]) == int(record["missing_files"])
    verify = enclave("weights", "verify", "-i", str(inventory), "--limit", "node3")
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-2000:]

    # The engine serves through the gateway next to its peers, which kept running: deploy restarted neither.
    assert ssh(inventory, "node3", f"systemctl is-active {UNIT}", check=False).stdout.strip() == "active"
    assert {h: engine_pid(inventory, h) for h in PEERS} == pids, "adding a node restarted a running engine"
    gateway = Gateway.of(inventory)
    port = int((planfile.read(inventory) or {}).get("port", 8000))
    answered = answering_engines(gateway, inventory, served_model(gateway), count=9)
    assert f"{host_address(inventory, 'node3')}:{port}" in answered, answered
