"""Which host runs Prometheus and Alertmanager: the planner decides it once (enclave.plan.monitoring) and writes it
into the plan, where the firewall and the monitoring role both read it."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave.plan.monitoring import check_monitoring_group, monitoring_host
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
    from enclave.runner.inventory import validate
    assert validate(good, reachable=False).groups["enclave_monitoring"] == ["n1"]
    bad = tmp_path / "bad"
    bad.mkdir()
    path = write_inventory(bad, groups={**groups, "enclave_monitoring": ["n1", "n2"]})
    assert any("'enclave_monitoring' must hold exactly one host" in p for p in problems_of(path))
