"""Monitoring on the session's sandbox: Prometheus on the gateway scrapes every target; a replica drained at the
gateway shows in the kit's signals; a stopped engine (drained first, so clients are not hurt) fires EngineDown at a
webhook this test runs on the controller's bridge address within 2 minutes, and the alert resolves after the engine
is back; a node trying to reach the outside host fires EgressToPublicAddress; `enclave status` shows both replicas'
history from Prometheus; a capture on the sandbox's bridge during all of it sees no packet to or from an address
outside the sandbox's private network. The sandbox's inventory sets a fast pace (5 s scrape and evaluation, 15 s for
engine-down, 10 s signals) so the module stays within a few minutes.
Everything it breaks it restores (undrain, start); when it cannot, it marks the sandbox dirty."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from enclave.plan import planfile
from enclave.runner.inventory import ansible_inventory
from enclave.sandbox import Sandbox
from enclave.status import history
from tests.integration.capture import BridgeCapture
from tests.integration.conftest import SANDBOX, STATE, enclave, mark_dirty, ssh
from tests.integration.nethelpers import host_address, outside_host, tcp_reaches, wait_until

ALERT_WAIT_S = 120  # the bound: engine-down reaches the webhook within 2 minutes
ENGINE_START_S = 900  # the CPU engine on a loaded 2-core machine (as test_gateway waits)


def prometheus_url(inventory: Path) -> str:
    # Where `enclave status` reads its history: the monitoring host's private address (the firewall admits the
    # controller, the admin) and the monitoring role's port.
    plan = planfile.read(inventory)
    assert plan is not None, f"no plan for {inventory}"
    return history.prometheus_url(plan, ansible_inventory(inventory).hostvars)


def api(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - the sandbox's own address
        answer = json.loads(response.read())
    assert answer["status"] == "success", answer
    return answer["data"]


def query(base: str, promql: str) -> list[dict[str, Any]]:
    return api(base, "/api/v1/query", query=promql)["result"]


@pytest.fixture(scope="module")
def capture(deployed: object) -> Iterator[BridgeCapture]:
    """Every packet on the sandbox's bridge while this module runs (the issue's capture: none may leave)."""
    spec = Sandbox(SANDBOX, state_root=STATE).recorded_spec()
    assert spec is not None
    watching = BridgeCapture(spec.bridge, spec.network)
    yield watching
    watching.close()


@pytest.fixture(scope="module")
def prometheus(deployed: object, inventory: Path, capture: BridgeCapture) -> str:
    return prometheus_url(inventory)


class Webhook:
    """Alertmanager's webhook receiver: every POSTed notification, kept in arrival order."""

    def __init__(self, address: str, port: int) -> None:
        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((address, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self, name: str, status: str, host: str) -> list[dict[str, Any]]:
        return [a for n in list(self.received) for a in n["alerts"]
                if a["labels"].get("alertname") == name and a["status"] == status and a["labels"].get("host") == host]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def webhook(deployed: object, inventory: Path) -> Iterator[Webhook]:
    urls = yaml.safe_load(inventory.read_text())["all"]["vars"]["monitoring_webhook_urls"]
    target = urllib.parse.urlsplit(urls[0])
    hook = Webhook(str(target.hostname), int(target.port or 80))
    yield hook
    hook.close()


def test_every_target_is_up(prometheus: str) -> None:
    def scraped() -> bool:
        return all(t["health"] != "unknown" for t in api(prometheus, "/api/v1/targets")["activeTargets"])

    assert wait_until(scraped, 60, step=2), "some targets were never scraped"
    targets = api(prometheus, "/api/v1/targets")["activeTargets"]
    jobs = sorted((t["labels"]["job"], t["labels"].get("host", "")) for t in targets)
    assert jobs == sorted([("prometheus", ""), ("alertmanager", ""), ("node", "gateway"), ("node", "node1"),
                           ("node", "node2"), ("nginx", "gateway"), ("engine", "node1"), ("engine", "node2")]), jobs
    down = [(t["labels"]["job"], t["labels"].get("host"), t["lastError"]) for t in targets if t["health"] != "up"]
    assert not down, down
    # the kit's own signals reach Prometheus from every host
    hosts = {r["metric"]["host"] for r in query(prometheus, "enclave_signals_last_run_timestamp_seconds")}
    assert hosts == {"gateway", "node1", "node2"}
    assert query(prometheus, 'enclave_firewall_packets_total{counter="dropped_ingress"}')
    assert query(prometheus, "vllm:num_requests_waiting"), "no engine metrics scraped"


def _drained_in_metrics(prometheus: str, host: str) -> bool:
    return bool(query(prometheus, f'enclave_gateway_replica_drained{{replica_host="{host}"}} == 1'))


def test_a_drained_replica_shows_in_the_metrics(prometheus: str, inventory: Path) -> None:
    enclave("drain", "node2", "-i", str(inventory), check=True)
    try:
        assert wait_until(lambda: _drained_in_metrics(prometheus, "node2"), 60, step=2), (
            "node2 drained at the gateway, but enclave_gateway_replica_drained never showed it")
        assert query(prometheus, "enclave_gateway_drained_replicas")[0]["value"][1] == "1"
    finally:
        if enclave("undrain", "node2", "-i", str(inventory)).returncode != 0:
            mark_dirty("test_monitoring: undrain node2 failed")
    assert wait_until(lambda: not _drained_in_metrics(prometheus, "node2"), 60, step=2)


def test_a_stopped_engine_fires_engine_down_and_resolves(prometheus: str, inventory: Path, webhook: Webhook) -> None:
    enclave("drain", "node2", "-i", str(inventory), check=True)
    stopped_at = time.monotonic()
    ssh(inventory, "node2", "systemctl stop enclave-engine.service")
    restored = False
    try:
        assert wait_until(lambda: webhook.alerts("EngineDown", "firing", "node2"), ALERT_WAIT_S, step=2), (
            f"no EngineDown for node2 at the webhook within {ALERT_WAIT_S} s; received: {webhook.received}")
        print(f"monitoring: EngineDown at the webhook {time.monotonic() - stopped_at:.0f} s after the stop")
        (alert,) = webhook.alerts("EngineDown", "firing", "node2")[:1]
        assert alert["labels"]["replica"] == "replica-2" and alert["labels"]["severity"] == "critical"
        ssh(inventory, "node2", "systemctl start enclave-engine.service")
        up = 'up{job="engine",host="node2"} == 1'
        assert wait_until(lambda: query(prometheus, up), ENGINE_START_S, step=5), "node2's engine did not come back"
        restored = enclave("undrain", "node2", "-i", str(inventory)).returncode == 0
        assert wait_until(lambda: webhook.alerts("EngineDown", "resolved", "node2"), ALERT_WAIT_S, step=2), (
            "EngineDown for node2 never resolved at the webhook")
    finally:
        if not restored:
            ssh(inventory, "node2", "systemctl start enclave-engine.service", check=False)
            if enclave("undrain", "node2", "-i", str(inventory)).returncode != 0:
                mark_dirty("test_monitoring: node2's engine or rotation may not be restored")


def test_an_egress_attempt_fires_the_egress_alert(prometheus: str, inventory: Path, webhook: Webhook) -> None:
    spec = Sandbox(SANDBOX, state_root=STATE).recorded_spec()
    assert spec is not None
    # The attempt is counted (egress_public) and dropped; the counter stays raised until node1's firewall reloads,
    # which no later test reads (test_firewall, which does, runs before this module).
    with outside_host(spec) as outside:
        assert not tcp_reaches(inventory, "node1", outside.address, outside.port, wait_s=3), "the firewall let it out"
    assert wait_until(lambda: webhook.alerts("EgressToPublicAddress", "firing", "node1"), ALERT_WAIT_S, step=2), (
        f"no EgressToPublicAddress for node1 at the webhook; received: {webhook.received}")


def test_status_shows_both_replicas_history_from_prometheus(prometheus: str, inventory: Path) -> None:
    # The module's tests have had Prometheus scrape both engines for minutes (node2's stop leaves a gap in its
    # series, not an empty one); a status read is one playbook run, so a few tries at most.
    found: dict[str, Any] = {}

    def read() -> bool:
        proc = enclave("status", "--json", "--history-minutes", "5", "-i", str(inventory), timeout=180)
        found.clear()
        try:
            found.update(json.loads(proc.stdout))
        except ValueError:
            found["not JSON"] = f"exit {proc.returncode}: {proc.stdout[-500:]} {proc.stderr[-1000:]}"
            return False
        replicas = (found.get("history") or {}).get("replicas") or {}
        return sorted(replicas) == ["node1", "node2"] and all(
            r["tokens_per_s"]["samples"] and r["requests"]["samples"] for r in replicas.values())

    assert wait_until(read, 120, step=10), f"no history of both replicas in enclave status: {found}"
    assert found["history_unavailable"] is None and found["history"]["source"] == prometheus
    replicas = found["history"]["replicas"]
    assert (replicas["node1"]["replica"], replicas["node2"]["replica"]) == ("replica-1", "replica-2")
    assert replicas["node1"]["requests"]["now"] is not None and replicas["node1"]["tokens_per_s"]["now"] is not None

def test_no_packet_left_the_private_network_during_these_tests(capture: BridgeCapture, inventory: Path) -> None:
    # Runs last in the module: the scrapes, alerts, webhook calls and the refused egress attempt above all happened
    # while the capture ran. It must have seen the monitoring traffic itself, else an empty capture proves nothing.
    gateway, node1 = host_address(inventory, "gateway"), host_address(inventory, "node1")
    print(f"bridge capture: {capture.frames} frames, {sum(capture.inside.values())} IP packets inside "
          f"{capture.network}, {sum(capture.outside.values())} to or from elsewhere")
    assert capture.inside[(gateway, node1)] > 0, "the capture saw no scrape from the gateway to node1"
    assert not capture.outside, f"packets to or from outside {capture.network}: {capture.outside.most_common(10)}"
