"""Day-2 operations on the session's deployed sandbox, with engines and clients: `enclave update` moves both nodes to
a new model revision while two clients keep sending completions through the gateway, and none fails; a rerun changes
nothing and restarts nothing; `enclave rollback` goes back without moving a byte; an update whose revision cannot
start stops at the first node, which stays out of the rotation while the other keeps serving, and stays out when
the same update is run again.

Part of every `make test` (the day-2 proof must not rot). Engine starts are what this costs on CPUs (the sandbox
profile's eager one-node replicas: about half a minute each on a quiet 2-core machine): update 2, rerun 0,
rollback 2, the failed update 1 and its rerun 1 (each fails as soon as vLLM exits) and the rollback after them 1.
The module leaves the sandbox as it found it: every node on the planned revision and serving, nothing drained, the
plan file unchanged.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from enclave.mirror.repo import publish
from enclave.plan import planfile
from enclave.sandbox.tinymodel import TINY_MODEL_REPO, make_tiny_model
from tests.integration.conftest import enclave, ssh
from tests.integration.nethelpers import Gateway, answering_engines, completion_body, host_address, served_model
from tests.integration.test_weights import HUB_ROOT, MODEL_DIR, current, planned_revision, variant

REPO = Path(__file__).resolve().parents[2]
NODES = ("node1", "node2")
UNIT = "enclave-engine.service"
DRAINED_FILE = "/etc/enclave/gateway-drained"


# -- the load: two clients through the gateway for the whole operation --------------------------------------------
@dataclass
class LoadReport:
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    ended_by: str = "stop"  # "stop" (the operation finished first), "limit" or "deadline"


class Load:
    """`clients` threads, each sending small completions with the key through the gateway's TLS endpoint, one after
    the other and `pause_s` apart (the engines restarting share the machine's cores with the one serving), until
    stopped, `limit` requests in all, or `deadline_s`. Every request counts; a failure is any answer other than
    2xx, or no answer at all (connection refused or reset, TLS error, timeout)."""

    def __init__(self, gateway: Gateway, model: str, *, clients: int = 2, limit: int = 20000,
                 deadline_s: float = 2400, pause_s: float = 0.5) -> None:
        self.gateway, self.model, self.clients = gateway, model, clients
        self.limit, self.deadline_s, self.pause_s = limit, deadline_s, pause_s
        self.report = LoadReport()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Load:
        self._start = time.monotonic()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(180)
        self.report.seconds = time.monotonic() - self._start

    def _take(self) -> bool:
        with self._lock:
            if self._stop.is_set():
                return False
            if self.report.requests >= self.limit:
                self.report.ended_by = "limit"
                return False
            if time.monotonic() - self._start > self.deadline_s:
                self.report.ended_by = "deadline"
                return False
            self.report.requests += 1
            return True

    def _client(self) -> None:
        body = json.dumps(completion_body(self.model, max_tokens=4))
        while self._take():
            failure = None
            try:
                conn = self.gateway.connection(timeout=60)
                try:
                    conn.request("POST", "/v1/completions", body=body,
                                 headers={"Authorization": f"Bearer {self.gateway.key}",
                                          "Content-Type": "application/json"})
                    response = conn.getresponse()
                    payload = response.read()
                    if not 200 <= response.status < 300:
                        failure = f"HTTP {response.status} (request {response.getheader('x-request-id')}): " \
                                  f"{payload[:200]!r}"
                finally:
                    conn.close()
            except (OSError, http.client.HTTPException) as exc:
                failure = f"{type(exc).__name__}: {exc}"
            if failure:
                with self._lock:
                    self.report.failures.append(f"{time.monotonic() - self._start:.1f}s {failure}")
            self._stop.wait(self.pause_s)

    def check(self, what: str) -> LoadReport:
        """The report, printed; the load must have run through the whole operation."""
        r = self.report
        print(f"{what}: {r.requests} requests by {self.clients} clients over {r.seconds:.0f} s, "
              f"{len(r.failures)} failed")
        assert r.ended_by == "stop", f"the load ended ({r.ended_by}) before the {what} did"
        assert r.requests >= 20, f"only {r.requests} requests during the {what}: the load did not run"
        return r


# -- what the nodes run ---------------------------------------------------------------------------------------------
def engine_process(inventory: Path, host: str) -> dict[str, str]:
    """The engine unit's state and the revision its running process was started with (its environment)."""
    script = (f"systemctl show {UNIT} -p ActiveState -p SubState -p MainPID -p ActiveEnterTimestamp -p NRestarts; "
              f"pid=$(systemctl show {UNIT} -p MainPID --value); "
              "echo Revision=$(tr '\\0' '\\n' < /proc/$pid/environ 2>/dev/null "
              "| sed -n 's/^ENCLAVE_MODEL_REVISION=//p')")
    out = ssh(inventory, host, script).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def drained(inventory: Path) -> list[str]:
    out = ssh(inventory, "gateway", f"cat {DRAINED_FILE} 2>/dev/null || true").stdout
    return [line.strip() for line in out.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def transfer_record(inventory: Path, host: str) -> str:
    """The node's last transfer record, byte for byte, with its mtime: any distribution rewrites it."""
    return ssh(inventory, host, f"stat -c %Y {MODEL_DIR}/.enclave-last-transfer.json 2>/dev/null; "
                                f"cat {MODEL_DIR}/.enclave-last-transfer.json 2>/dev/null || true").stdout


def revision_files(inventory: Path, host: str, revision: str) -> str:
    """Inode, size and mtime of every file of a revision: any copy or repair changes one of them. The stamp cache
    (.enclave-stamps.json) is bookkeeping every verification rewrites, not a model file."""
    return ssh(inventory, host, f"cd {MODEL_DIR}/{revision} && "
                                f"find . -type f ! -name '.enclave-*' -printf '%p %i %s %T@\\n' | sort").stdout


def changes(proc: subprocess.CompletedProcess[str]) -> int:
    match = re.search(r"ok: (\d+) change\(s\)", proc.stdout)
    assert match, proc.stdout[-3000:] + proc.stderr[-2000:]
    return int(match.group(1))


def timed(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    proc = enclave(*args)
    return proc, time.monotonic() - start


def succeeds_under_load(scene: Scene, what: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `enclave ARGS` while the two clients send completions through the gateway: it must exit 0 and no
    request may fail. Prints the request count, the failures and the operation's duration."""
    with Load(scene.gateway, scene.model) as load:
        proc, seconds = timed(*args)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    report = load.check(what)
    print(f"{what}: {seconds:.0f} s, {changes(proc)} change(s)")
    assert report.failures == [], report.failures[:10]
    return proc


# -- the module's sandbox state, put back whatever happens ----------------------------------------------------------
@dataclass
class Scene:
    inventory: Path
    gateway: Gateway
    model: str
    planned: str
    new: str
    broken: str
    addresses: dict[str, str]
    before: dict[str, Any] = field(default_factory=dict)


def broken_variant(tmp_path: Path, ref: str, *, seed: int) -> str:
    """A revision that stages, verifies and is signed like any other, but that vLLM cannot start: its config names
    an architecture no engine knows (what a wrong or too new model looks like to an old vLLM)."""
    source = tmp_path / ref
    make_tiny_model(source, seed=seed)
    config = json.loads((source / "config.json").read_text())
    config["architectures"] = ["EnclaveNoSuchModelForCausalLM"]
    (source / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return publish(HUB_ROOT, TINY_MODEL_REPO, source, ref=ref)


@pytest.fixture(scope="module")
def scene(deployed: subprocess.CompletedProcess[str], inventory: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    gateway = Gateway.of(inventory)
    planned = planned_revision(inventory)
    plan_file = planfile.plan_path(inventory)
    plan_text = plan_file.read_text()
    drained_before = drained(inventory)
    for host in NODES:
        assert current(inventory, host) == planned, f"{host} is not on the planned revision"
    tmp = tmp_path_factory.mktemp("update")
    port = int((planfile.read(inventory) or {}).get("port", 8000))
    found = Scene(inventory, gateway, served_model(gateway), planned, variant(tmp, "integration-update", seed=11),
                  broken_variant(tmp, "integration-update-broken", seed=12),
                  {h: f"{host_address(inventory, h)}:{port}" for h in NODES})
    try:
        yield found
    finally:
        # Back to the planned revision on every node and serving, the rotation and the plan file as they were.
        moved = [h for h in NODES if current(inventory, h) != planned
                 or engine_process(inventory, h).get("Revision") != planned]
        if moved:
            enclave("update", "-i", str(inventory), "--model-revision", planned, check=True)
        for host in NODES:
            if host in drained(inventory) and host not in drained_before:
                enclave("undrain", host, "-i", str(inventory), check=True)
        if plan_file.read_text() != plan_text:
            plan_file.write_text(plan_text)
        for host in NODES:
            state = engine_process(inventory, host)
            assert current(inventory, host) == planned and state.get("Revision") == planned, (host, state)
            assert state.get("ActiveState") == "active", (host, state)
        assert drained(inventory) == drained_before


# -- the proofs (in order: each starts where the one before left the cluster) -----------------------------------
def test_update_moves_every_node_without_a_failed_request(scene: Scene) -> None:
    proc = succeeds_under_load(scene, f"update {scene.planned[:12]} -> {scene.new[:12]} on {len(NODES)} nodes",
                               "update", "-i", str(scene.inventory), "--model-revision", scene.new)
    for host in NODES:
        state = engine_process(scene.inventory, host)
        assert current(scene.inventory, host) == scene.new, host
        assert state["ActiveState"] == "active" and state["Revision"] == scene.new, (host, state)
    assert drained(scene.inventory) == []
    assert answering_engines(scene.gateway, scene.inventory, scene.model) == set(scene.addresses.values())
    assert planfile.read(scene.inventory)["revision"] == scene.new
    assert f"every node serves {scene.new}" in proc.stdout


def test_plain_ansible_playbook_records_the_revision_it_moved_to(scene: Scene) -> None:
    """The update playbook itself writes the plan (not the CLI): plain `ansible-playbook playbooks/update.yml`, given
    a plan that still names the revision before the update, rolls (a no-op: the nodes serve it already) and leaves
    the plan naming it, so a later plain site.yml keeps the nodes there, and `enclave plan` shows it as the recorded
    revision. Nothing else changes and no engine restarts."""
    inv = scene.inventory
    plan_file = planfile.plan_path(inv)
    planfile.write(inv, {**(planfile.read(inv) or {}), "revision": scene.planned})
    before = {h: engine_process(inv, h) for h in NODES}
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    # --flush-cache: see test_deploy's plain run (one fact cache by host name for every inventory)
    proc = subprocess.run(["ansible-playbook", "playbooks/update.yml", "-i", str(inv), "--flush-cache", "-e",
                           f"update_revision={scene.new}"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert planfile.read(inv)["revision"] == scene.new
    recap = {h: int(n) for h, n in re.findall(r"^(\w+)\s+: ok=\d+\s+changed=(\d+)", proc.stdout, re.M)}
    assert sum(recap.values()) == 1, recap  # the plan record, on the one node it ran for
    for host in NODES:
        after = engine_process(inv, host)
        assert after["MainPID"] == before[host]["MainPID"], host

    # `enclave plan` re-plans from the inventory (which still pins the planned revision) and says what the update
    # recorded; the recorded plan is put back after it, as the operator who keeps the update would.
    recorded = plan_file.read_text()
    shown = enclave("plan", "-i", str(inv), "--json")
    plan_file.write_text(recorded)
    assert shown.stdout.strip(), shown.stderr[-2000:]
    assert json.loads(shown.stdout)["recorded_revision"] == scene.new, shown.stdout[-2000:]


def test_rerunning_the_update_changes_and_restarts_nothing(scene: Scene) -> None:
    before = {h: engine_process(scene.inventory, h) for h in NODES}
    proc, seconds = timed("update", "-i", str(scene.inventory), "--model-revision", scene.new)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    changed = [line.strip() for line in proc.stdout.splitlines() if line.startswith("  changed ")]
    print(f"rerun: {seconds:.0f} s, {changes(proc)} change(s)")
    assert changes(proc) == 0, proc.stdout[-6000:]
    assert changed == []
    for host in NODES:
        after = engine_process(scene.inventory, host)
        assert (after["MainPID"], after["ActiveEnterTimestamp"]) == (before[host]["MainPID"],
                                                                     before[host]["ActiveEnterTimestamp"]), host


def test_rollback_returns_every_node_without_moving_a_byte(scene: Scene) -> None:
    inv = scene.inventory
    records = {h: transfer_record(inv, h) for h in NODES}
    files = {h: revision_files(inv, h, scene.planned) for h in NODES}
    proc = succeeds_under_load(scene, f"rollback {scene.new[:12]} -> {scene.planned[:12]}", "rollback", "-i", str(inv))
    assert f"-> {scene.planned}" in proc.stderr + proc.stdout
    for host in NODES:
        state = engine_process(inv, host)
        assert current(inv, host) == scene.planned, host
        assert state["ActiveState"] == "active" and state["Revision"] == scene.planned, (host, state)
        assert transfer_record(inv, host) == records[host], f"rollback ran a transfer to {host}"
        assert revision_files(inv, host, scene.planned) == files[host], f"rollback rewrote model files on {host}"
    assert "relay" not in proc.stdout.lower() and "rsync" not in proc.stdout.lower(), proc.stdout
    assert drained(inv) == []
    assert answering_engines(scene.gateway, inv, scene.model) == set(scene.addresses.values())


def test_an_update_that_cannot_start_stops_at_the_first_node(scene: Scene) -> None:
    inv = scene.inventory
    with Load(scene.gateway, scene.model) as load:
        proc, seconds = timed("update", "-i", str(inv), "--model-revision", scene.broken)
        # Measured while the cluster is stopped halfway, before anything puts it back.
        out = drained(inv)
        states = {h: engine_process(inv, h) for h in NODES}
        revisions = {h: current(inv, h) for h in NODES}
    report = load.check("failed update")
    print(f"update to an engine that cannot start: exit {proc.returncode} after {seconds:.0f} s")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-4000:]
    assert report.failures == [], report.failures[:10]
    assert set(re.findall(r"^  FAILED (\S+):", proc.stdout, re.MULTILINE)) == {"node1"}, output[-4000:]
    assert re.search(r"^node1: .*engine.* is not ready:\s+the engine exited while starting", output, re.MULTILINE), \
        output[-4000:]
    assert "EnclaveNoSuchModelForCausalLM" in output, "the CLI does not say why the engine failed"
    assert out == ["node1"], out
    assert revisions == {"node1": scene.broken, "node2": scene.planned}
    assert states["node2"]["ActiveState"] == "active" and states["node2"]["Revision"] == scene.planned
    assert answering_engines(scene.gateway, inv, scene.model) == {scene.addresses["node2"]}
    assert planfile.read(inv)["revision"] == scene.planned, "a failed update recorded its revision in the plan"

    # Rerun unchanged: node1 looks done (its current and engine.env name the revision) but the update left it out,
    # so it moves again, must pass readiness, fails again and stays out; node2 is not touched.
    with Load(scene.gateway, scene.model) as load:
        again, seconds = timed("update", "-i", str(inv), "--model-revision", scene.broken)
    report = load.check("rerun of the failed update")
    print(f"rerun of the failed update: exit {again.returncode} after {seconds:.0f} s")
    assert again.returncode == 1, (again.stdout + again.stderr)[-4000:]
    assert report.failures == [], report.failures[:10]
    assert set(re.findall(r"^  FAILED (\S+):", again.stdout, re.MULTILINE)) == {"node1"}, again.stdout[-4000:]
    assert drained(inv) == ["node1"]
    assert engine_process(inv, "node2")["MainPID"] == states["node2"]["MainPID"], "the rerun restarted node2"

    # The way back the runbook gives: rollback moves the failed node only, restarts it and puts it back.
    succeeds_under_load(scene, "rollback of the failed node", "rollback", "-i", str(inv))
    for host in NODES:
        assert current(inv, host) == scene.planned
    assert engine_process(inv, "node2")["MainPID"] == states["node2"]["MainPID"], "rollback restarted node2"
    assert drained(inv) == []
    assert answering_engines(scene.gateway, inv, scene.model) == set(scene.addresses.values())
