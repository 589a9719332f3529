"""The engine on real sandbox hosts: vLLM's CPU build under enclave-engine.service, deployed by `enclave deploy`.

Requests go from the gateway host (the firewall opens the engine port to gateway hosts only), as the gateway's
own nginx does. Each node in the sandbox plan is its own replica.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from enclave.runner import artifacts
from tests.integration.conftest import STATE, enclave, ssh

NODES = ("node1", "node2")
UNIT = "enclave-engine.service"


def engine_key(inventory: Path) -> str:
    data = yaml.safe_load((inventory.parent / "group_vars" / "all" / "engine.yml").read_text())
    return str(data["engine_api_key"])


def address(inventory: Path, host: str) -> str:
    data = yaml.safe_load(inventory.read_text())["all"]["children"]
    return next(g["hosts"][host]["ansible_host"] for g in data.values() if host in (g.get("hosts") or {}))


def request(inventory: Path, node: str, path: str, *, key: str | None, body: dict | None = None) -> tuple[int, str]:
    """curl from the gateway host; the key travels in a header file on stdin, never on a command line."""
    url = f"http://{address(inventory, node)}:8000{path}"
    data = f"--data {shlex.quote(json.dumps(body))} -H 'Content-Type: application/json'" if body else ""
    header = f"printf 'Authorization: Bearer %s\\n' {shlex.quote(key)} | " if key else ""
    script = (f"{header}curl -sS -o /tmp/engine-answer -w '%{{http_code}}' --max-time 120 "
              f"{'-H @-' if key else ''} {data} {url}; echo; cat /tmp/engine-answer")
    out = ssh(inventory, "gateway", script).stdout
    status, _, answer = out.partition("\n")
    return int(status), answer


def last_summary() -> dict:
    return artifacts.read_summary(artifacts.run_dirs(STATE / "runs")[-1])


def unit_events(inventory: Path, node: str, since: float) -> dict[str, int]:
    """How often systemd stopped and started the engine since `since` (epoch seconds), and its crash restarts."""
    out = ssh(inventory, node, f"journalctl -u {UNIT} --since @{int(since)} --no-pager -o cat _PID=1; "
                               f"systemctl show -p NRestarts --value {UNIT}").stdout.splitlines()
    return {"stopping": sum(ln.startswith("Stopping enclave-engine") for ln in out),
            "started": sum(ln.startswith("Started enclave-engine") for ln in out),
            "crash_restarts": int(out[-1])}


@pytest.mark.parametrize("node", NODES)
def test_completion_with_the_key_answers_200(deployed: subprocess.CompletedProcess[str], inventory: Path,
                                             node: str) -> None:
    status, answer = request(inventory, node, "/v1/completions", key=engine_key(inventory),
                             body={"model": "sandbox-tiny", "prompt": "Hello", "max_tokens": 4})
    assert status == 200, answer
    data = json.loads(answer)
    assert data["model"] == "sandbox-tiny" and data["usage"]["completion_tokens"] == 4


@pytest.mark.parametrize("node", NODES)
def test_without_the_key_or_with_a_wrong_one_401(deployed: subprocess.CompletedProcess[str], inventory: Path,
                                                 node: str) -> None:
    body = {"model": "sandbox-tiny", "prompt": "Hello", "max_tokens": 4}
    assert request(inventory, node, "/v1/completions", key=None, body=body)[0] == 401
    assert request(inventory, node, "/v1/completions", key="not-the-key-" * 3, body=body)[0] == 401
    assert request(inventory, node, "/v1/models", key=None)[0] == 401


def test_engine_runs_as_enclave_and_the_key_is_in_no_process_list_or_journal(
        deployed: subprocess.CompletedProcess[str], inventory: Path) -> None:
    key = engine_key(inventory)
    for node in NODES:
        # Every process in the unit's cgroup, found by comparing /proc/*/cgroup with the main process's (inside a
        # container, /sys/fs/cgroup does not always show the unit's ControlGroup path).
        users = ssh(inventory, node, f"m=$(systemctl show -p MainPID --value {UNIT}); cg=$(cat /proc/$m/cgroup); "
                                     "for p in /proc/[0-9]*; do if [ \"$(cat $p/cgroup 2>/dev/null)\" = \"$cg\" ]; "
                                     "then ps -o user= -p ${p#/proc/} || true; fi; done").stdout.split()
        assert users and set(users) == {"enclave"}, (node, users)
        ps = ssh(inventory, node, "ps -eo user,pid,args ww").stdout
        assert "vllm serve" in ps and "--api-key" not in ps
        assert key not in ps, f"the API key is in {node}'s process list"
        journal = ssh(inventory, node, "journalctl --no-pager -o cat").stdout
        assert "Application startup complete" in journal or "Starting vLLM" in journal
        assert key not in journal, f"the API key is in {node}'s journal"


def test_engine_listens_on_the_private_address_only(deployed: subprocess.CompletedProcess[str],
                                                    inventory: Path) -> None:
    for node in NODES:
        sockets = ssh(inventory, node, "ss -Hltn 'sport = :8000'").stdout.split("\n")
        local = {line.split()[3] for line in sockets if line.strip()}
        assert local == {f"{address(inventory, node)}:8000"}, (node, local)


def test_a_changed_setting_restarts_the_engine_exactly_once_and_a_rerun_not_at_all(
        deployed: subprocess.CompletedProcess[str], inventory: Path) -> None:
    """An environment value changes on node2 only: node2 restarts once through the handler, node1 not at all;
    putting it back restarts node2 once more, and the rerun after that changes nothing and restarts no engine
    (the one rerun of the engine phase this module pays for)."""
    try:
        since = time.time()
        changed = enclave("deploy", "-i", str(inventory), "--tags", "engine", "-e",
                          json.dumps({"engine_extra_env": {"ENCLAVE_TEST_MARK": "1"}}), "--limit", "node2")
        assert changed.returncode == 0, changed.stdout[-3000:]
        assert unit_events(inventory, "node2", since) == {"stopping": 1, "started": 1, "crash_restarts": 0}
        assert unit_events(inventory, "node1", since)["stopping"] == 0
        env = ssh(inventory, "node2", f"tr '\\0' '\\n' < /proc/$(systemctl show -p MainPID --value {UNIT})/environ")
        assert "ENCLAVE_TEST_MARK=1" in env.stdout.splitlines()
    finally:
        since = time.time()
        enclave("deploy", "-i", str(inventory), "--tags", "engine", "--limit", "node2", check=True)
    assert unit_events(inventory, "node2", since) == {"stopping": 1, "started": 1, "crash_restarts": 0}
    since = time.time()
    enclave("deploy", "-i", str(inventory), "--tags", "engine", check=True)
    assert {h: t["changed"] for h, t in last_summary()["hosts"].items() if h in NODES} == dict.fromkeys(NODES, 0)
    for node in NODES:
        assert unit_events(inventory, node, since) == {"stopping": 0, "started": 0, "crash_restarts": 0}, node
