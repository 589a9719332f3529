"""monitoring: on the monitoring host Prometheus scrapes every target (each host's node exporter, nginx's exporter,
every engine, DCGM), has loaded every shipped alert rule, Alertmanager is ready and, with monitoring_grafana,
Grafana answers; on every host the node exporter serves the kit's own signals, fresh."""

from __future__ import annotations

import ipaddress
import shlex
import time
from typing import Any

import pytest

from enclave.checks.prometheus_api import FETCH, rule_problems, shipped_alerts, target_health
from enclave.checks.settings import host_settings

testinfra_hosts = ["ansible://enclave_*"]

# A target Prometheus has not scraped yet right after a deploy: wait this long for its first scrape.
FIRST_SCRAPE_WAIT_S = 60
SIGNALS_MAX_AGE_S = 300


def _address(host: Any, hostvars: dict[str, Any]) -> str:
    """The host's address inside enclave_private_network, where the servers and exporters listen."""
    network = ipaddress.IPv4Network(str(hostvars.get("enclave_private_network")), strict=False)
    for line in host.run("ip -4 -o addr show").stdout.splitlines():
        address = line.split()[3].split("/")[0]
        if ipaddress.IPv4Address(address) in network:
            return address
    raise AssertionError(f"no address inside enclave_private_network {network}")


def _get(host: Any, url: str) -> str:
    result = host.run(f"python3 -c {shlex.quote(FETCH)} {shlex.quote(url)}")
    assert result.rc == 0, f"GET {url} on {host.backend.hostname} failed: {result.stderr.strip()}"
    return result.stdout


@pytest.fixture
def monitoring(host: Any, hostvars: dict[str, Any]) -> dict[str, Any]:
    chosen = ((hostvars.get("enclave_plan") or {}).get("monitoring") or {}).get("host")
    if not chosen:
        pytest.skip("the plan names no monitoring host (run enclave plan, then enclave deploy)")
    if hostvars["inventory_hostname"] != chosen:
        pytest.skip(f"Prometheus runs on {chosen}")
    settings = host_settings(hostvars, "monitoring")
    base = f"http://{_address(host, hostvars)}"
    return {"prometheus": f"{base}:{settings['monitoring_prometheus_port']}",
            "alertmanager": f"{base}:{settings['monitoring_alertmanager_port']}",
            "grafana": f"{base}:{settings['monitoring_grafana_port']}" if settings["monitoring_grafana"] is True
            else None}


def test_every_target_is_up(host: Any, monitoring: dict[str, Any]) -> None:
    deadline = time.monotonic() + FIRST_SCRAPE_WAIT_S
    while True:
        down, unknown = target_health(_get(host, f"{monitoring['prometheus']}/api/v1/targets"))
        if not unknown or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert not down, "Prometheus cannot scrape: " + "; ".join(down)
    assert not unknown, "never scraped yet: " + ", ".join(unknown)


def test_every_alert_rule_is_loaded(host: Any, monitoring: dict[str, Any]) -> None:
    problems = rule_problems(_get(host, f"{monitoring['prometheus']}/api/v1/rules"), shipped_alerts())
    assert not problems, "; ".join(problems)


def test_alertmanager_is_ready(host: Any, monitoring: dict[str, Any]) -> None:
    _get(host, f"{monitoring['alertmanager']}/-/ready")


def test_grafana_answers_when_provisioned(host: Any, monitoring: dict[str, Any]) -> None:
    if monitoring["grafana"] is None:
        pytest.skip("monitoring_grafana is off: the dashboards are imported by hand (docs/runbooks/monitoring.md)")
    if not host.service("grafana-server").is_running:
        pytest.fail("grafana-server is not running (enclave deploy --tags monitoring)")
    _get(host, f"{monitoring['grafana']}/api/health")


def test_node_exporter_serves_fresh_signals(host: Any, hostvars: dict[str, Any]) -> None:
    settings = host_settings(hostvars, "monitoring")
    if not host.service("prometheus-node-exporter").is_running:
        pytest.fail("prometheus-node-exporter is not running (enclave deploy --tags monitoring)")
    text = _get(host, f"http://{_address(host, hostvars)}:{settings['monitoring_node_exporter_port']}/metrics")
    stamps = [line.split()[-1] for line in text.splitlines()
              if line.startswith("enclave_signals_last_run_timestamp_seconds")]
    assert stamps, "the node exporter serves none of the kit's signals (enclave-signals.timer, textfile directory)"
    age = time.time() - float(stamps[0])
    assert age < SIGNALS_MAX_AGE_S, f"the kit's signals are {age:.0f} s old (systemctl status enclave-signals)"
    failing = [line for line in text.splitlines() if line.startswith("enclave_signals_error{") and line.endswith(" 1")]
    assert not failing, "signals that cannot be read: " + "; ".join(failing)
