"""Which host runs Prometheus and Alertmanager: the planner decides it once (enclave.plan.monitoring) and writes it
into the plan, where the firewall and the monitoring role both read it."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave.errors import InventoryError
from enclave.plan.monitoring import check_monitoring_group, check_settings, monitoring_host
from enclave.plan.settings import roles_run
from enclave.runner.inventory import validate
from tests.unit.test_inventory import problems_of, write_inventory

REQUIRED = ("enclave_nodes", "enclave_gateway", "enclave_staging")
BASE = {"enclave_nodes": ["n2", "n1"], "enclave_gateway": ["gw2", "gw1"], "enclave_staging": ["n1"]}


def test_without_the_group_the_first_gateway_host_is_the_monitoring_host() -> None:
    assert monitoring_host(BASE) == "gw1"


def test_the_monitoring_group_wins_over_the_gateway() -> None:
    assert monitoring_host({**BASE, "enclave_monitoring": ["n2"]}) == "n2"


def test_no_gateway_and_no_group_decides_nothing() -> None:
    assert monitoring_host({"enclave_nodes": ["n1"]}) is None


@pytest.mark.parametrize(("members", "expected"), [
    (["n1", "n2"], "must hold exactly one host (the Prometheus and Alertmanager host); has n1, n2"),
    ([], "must hold exactly one host (the Prometheus and Alertmanager host); has none"),
    (["mon1"], "host mon1 is in none of enclave_nodes, enclave_gateway, enclave_staging"),
])
def test_a_bad_monitoring_group_is_named(members: list[str], expected: str) -> None:
    problems = check_monitoring_group({**BASE, "enclave_monitoring": members}, REQUIRED)
    assert len(problems) == 1 and expected in problems[0] and "'enclave_monitoring'" in problems[0]


def test_inventory_validation_accepts_the_group_and_refuses_two_hosts(tmp_path: Path) -> None:
    groups = {"enclave_nodes": ["n1", "n2"], "enclave_gateway": ["gw"], "enclave_staging": ["gw"]}
    good = write_inventory(tmp_path, groups={**groups, "enclave_monitoring": ["n1"]})
    assert validate(good, reachable=False).groups["enclave_monitoring"] == ["n1"]
    bad = tmp_path / "bad"
    bad.mkdir()
    path = write_inventory(bad, groups={**groups, "enclave_monitoring": ["n1", "n2"]})
    assert any("'enclave_monitoring' must hold exactly one host" in p for p in problems_of(path))


PATTERNS = {"monitoring_webhook_url_pattern": r"^https?://[^\s/]+(/\S*)?$",
            "monitoring_duration_pattern": r"^[0-9]+(ms|s|m|h|d|w|y)$",
            "monitoring_smarthost_pattern": r"^[^\s:]+:[0-9]+$"}


def test_good_receivers_and_retention_pass() -> None:
    assert check_settings("gw", {"monitoring_webhook_urls": ["http://10.40.1.5:9099/alerts"],
                                 "monitoring_smtp": {"smarthost": "10.40.1.25:25", "from": "a@x", "to": ["o@x"]},
                                 "monitoring_retention_size_gb": 50, "monitoring_retention_time": "90d"},
                          PATTERNS) == []
    assert check_settings("gw", {}, PATTERNS) == []  # the role's defaults


@pytest.mark.parametrize(("values", "expected"), [
    ({"monitoring_webhook_urls": ["ftp://10.40.1.5/x"]},
     "host 'gw': monitoring_webhook_urls entry 'ftp://10.40.1.5/x' is not an http(s) URL"),
    ({"monitoring_smtp": {"smarthost": "relay.internal", "from": "a@x", "to": ["o@x"]}},
     "host 'gw': monitoring_smtp needs smarthost (host:port), from and to (a list)"),
    ({"monitoring_smtp": {"smarthost": "10.0.0.1:25", "from": "a@x", "to": "o@x"}},
     "host 'gw': monitoring_smtp needs smarthost (host:port), from and to (a list)"),
    ({"monitoring_retention_size_gb": 0}, "host 'gw': monitoring_retention_size_gb must be a positive number of GiB"),
    ({"monitoring_retention_time": "30 days"}, "host 'gw': monitoring_retention_time must be a Prometheus duration"),
    ({"monitoring_grafana": "yes"}, "host 'gw': monitoring_grafana must be true or false, got 'yes'"),
    ({"monitoring_grafana": True}, "host 'gw': monitoring_grafana is true but monitoring_grafana_admin_password"),
    ({"monitoring_grafana": True, "monitoring_grafana_admin_password": ""},
     "host 'gw': monitoring_grafana is true but monitoring_grafana_admin_password is not set"),
])
def test_a_bad_setting_is_named_with_host_and_key(values: dict[str, object], expected: str) -> None:
    problems = check_settings("gw", values, PATTERNS)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_a_bad_receiver_stops_validation_before_any_host_is_touched(tmp_path: Path) -> None:
    groups = {"enclave_nodes": ["n1", "n2"], "enclave_gateway": ["gw"], "enclave_staging": ["gw"]}
    path = write_inventory(tmp_path, groups=groups, all_vars={"monitoring_webhook_urls": ["hooks.internal/alerts"]})
    # what `enclave deploy` asks for: the roles its tags reach (all of them without tags), monitoring among them
    assert "monitoring" in roles_run()
    with pytest.raises(InventoryError) as caught:
        validate(path, reachable=False, required=roles_run(("monitoring",)))
    assert caught.value.exit_code == 2
    assert caught.value.problems == [
        "host 'gw': monitoring_webhook_urls entry 'hooks.internal/alerts' is not an http(s) URL"]


def test_grafana_with_a_password_or_one_only_ansible_can_decrypt_passes() -> None:
    assert check_settings("gw", {"monitoring_grafana": True, "monitoring_grafana_admin_password": "x" * 20},
                          PATTERNS) == []
    # an inline vault value without its password: left to the role's own assert
    assert check_settings("gw", {"monitoring_grafana": True}, PATTERNS,
                          unresolved={"monitoring_grafana_admin_password"}) == []
    assert check_settings("gw", {"monitoring_grafana": False}, PATTERNS) == []


def test_grafana_without_its_password_stops_validation_before_any_host_is_touched(tmp_path: Path) -> None:
    groups = {"enclave_nodes": ["n1", "n2"], "enclave_gateway": ["gw"], "enclave_staging": ["gw"]}
    path = write_inventory(tmp_path, groups=groups, all_vars={"monitoring_grafana": True})
    with pytest.raises(InventoryError) as caught:
        validate(path, reachable=False, required=roles_run(("monitoring",)))
    assert caught.value.exit_code == 2
    assert caught.value.problems == [
        "host 'gw': monitoring_grafana is true but monitoring_grafana_admin_password is not set (keep it in vault: "
        'docs/runbooks/monitoring.md, "Grafana")']
