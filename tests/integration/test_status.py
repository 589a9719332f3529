"""`enclave status` on the session's deployed sandbox: what it reports per node is read back over SSH and
compared; drain shows as rotation state; --watch prints rounds until Ctrl-C and exits 0, and a chat completion
between two rounds shows as generated tokens/s."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import yaml

from tests.integration.conftest import ENCLAVE, STATE, enclave, ssh

NODES = ("node1", "node2")


def plan(inventory: Path) -> dict:
    return yaml.safe_load((inventory.parent / "group_vars" / "all" / "enclave_plan.yml").read_text())["enclave_plan"]


def status_json(inventory: Path) -> tuple[int, dict]:
    result = enclave("status", "-i", str(inventory), "--json")
    assert result.returncode in (0, 1), result.stdout[-2000:] + result.stderr[-2000:]
    return result.returncode, json.loads(result.stdout)


def test_status_reports_what_the_hosts_hold(deployed: subprocess.CompletedProcess[str], inventory: Path) -> None:
    code, data = status_json(inventory)
    wanted = plan(inventory)
    assert data["model"] == {"repo": wanted["repo"], "revision": wanted["revision"],
                             "served_model_name": wanted["served_model_name"]}
    model_root = f"/srv/enclave/models/{wanted['repo'].replace('/', '--')}/current"
    for host in NODES:
        node = data["nodes"][host]
        on_host = ssh(inventory, host, f"readlink {model_root}; systemctl show -p ActiveState "
                                       "enclave-engine.service; command -v nvidia-smi || echo none").stdout.split()
        assert node["revision"] == on_host[0] == wanted["revision"]
        # sandbox nodes have no GPU: said so, not guessed
        assert on_host[-1] == "none" and node["gpus"] is None
        assert node["gpu_note"] == "no GPU (nvidia-smi is not installed)"
        heads = [r["hosts"][0] for r in wanted["replicas"]]
        assert node["role"] == ("head" if host in heads else "worker")
        assert node["engine"] == "active" == on_host[1].removeprefix("ActiveState=")
        if node["role"] == "head":
            assert node["health"] == "ok" and node["running"] is not None and node["waiting"] is not None
            assert node["tokens_per_s"] is not None and node["rotation"] == "in rotation"
        assert node["problems"] == []
    gateway = data["gateways"]["gateway"]
    assert gateway["nginx"] == "active" and gateway["drained"] == []
    assert data["serving"] is True and code == 0


def test_a_drained_replica_shows_and_is_not_serving(deployed: subprocess.CompletedProcess[str],
                                                     inventory: Path) -> None:
    head = plan(inventory)["replicas"][0]["hosts"][0]
    enclave("drain", head, "-i", str(inventory), check=True)
    try:
        code, data = status_json(inventory)
        assert code == 1 and data["serving"] is False
        assert data["gateways"]["gateway"]["drained"] == [head]
        assert data["nodes"][head]["rotation"] == "drained"
        assert "drained at the gateway (`enclave undrain` puts it back)" in data["nodes"][head]["problems"]
    finally:
        enclave("undrain", head, "-i", str(inventory), check=True)
    _, data = status_json(inventory)
    assert data["gateways"]["gateway"]["drained"] == []


def test_watch_without_a_terminal_prints_rounds_and_ctrl_c_exits_0(deployed: subprocess.CompletedProcess[str],
                                                                   inventory: Path) -> None:
    proc = subprocess.Popen([ENCLAVE, "status", "-i", str(inventory), "--watch", "--interval", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "ENCLAVE_STATE_DIR": str(STATE), "COLUMNS": "200"})
    assert proc.stdout is not None
    rounds, seen, rates = 0, [], []
    deadline = time.monotonic() + 300
    for line in proc.stdout:  # bounded by the deadline and by the process ending
        seen.append(line)
        if rounds >= 1 and re.search(r" node\d: ", line):
            rates.append(line)
        if " serving: " in line or " NOT SERVING: " in line:
            rounds += 1
            if rounds == 1:  # tokens between this round's /metrics samples and the next round's
                enclave("chat", "-i", str(inventory), "--client", "sandbox-tests", "--max-tokens", "16", "Hello",
                        check=True)
        if rounds == 3 or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    output = "".join(seen) + rest
    assert rounds == 3, output[-3000:]
    # the replica that answered generated tokens between round 1 and round 2 or 3 (the chat races round 2's read)
    generated = [float(m.group(1)) for ln in rates if (m := re.search(r"tokens/s=([0-9.]+)", ln))]
    assert len(rates) == 2 * len(NODES) and max(generated, default=0.0) > 0, rates
    assert proc.returncode == 0, output[-3000:]
    assert "Traceback" not in output
    leftover = subprocess.run(["pgrep", "-f", f"ansible-playbook.*status.yml.*{inventory}"], capture_output=True,
                              text=True, check=False)
    assert leftover.stdout.strip() == ""
