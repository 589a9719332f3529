"""The monitoring checks' reading of Prometheus's API, on answers recorded from Prometheus 2.42 (Debian 12's) with
the shipped rules loaded, one target up (itself) and one refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enclave.checks.prometheus_api import rule_problems, shipped_alerts, target_health

FIXTURES = Path(__file__).parent / "fixtures" / "monitoring"


def test_a_down_target_is_named_with_its_error() -> None:
    down, unknown = target_health((FIXTURES / "prometheus-targets.json").read_text())
    assert unknown == []
    assert len(down) == 1 and down[0].startswith("node 127.0.0.1:19391 (node1): Get ")
    assert "connection refused" in down[0]


def test_a_target_not_scraped_yet_is_told_apart() -> None:
    data = json.loads((FIXTURES / "prometheus-targets.json").read_text())
    for target in data["data"]["activeTargets"]:
        target["health"] = "unknown"
    down, unknown = target_health(json.dumps(data))
    assert down == [] and sorted(unknown) == ["node 127.0.0.1:19391 (node1)", "prometheus 127.0.0.1:19390"]


def test_every_shipped_rule_loaded_is_no_problem_and_a_missing_one_is() -> None:
    text = (FIXTURES / "prometheus-rules.json").read_text()
    shipped = shipped_alerts()
    assert len(shipped) == 15 and {"EngineDown", "EgressToPublicAddress"} <= shipped
    assert rule_problems(text, shipped) == []
    assert rule_problems(text, shipped | {"Missing"}) == ["rule Missing is not loaded"]


def test_a_rule_that_fails_to_evaluate_is_named() -> None:
    data = json.loads((FIXTURES / "prometheus-rules.json").read_text())
    rule = data["data"]["groups"][0]["rules"][0]
    rule.update(health="err", lastError="many-to-many matching not allowed")
    assert rule_problems(json.dumps(data), shipped_alerts()) == [
        f"rule {rule['name']} fails to evaluate: many-to-many matching not allowed"]


def test_an_error_answer_is_an_error() -> None:
    with pytest.raises(ValueError, match="bad_data"):
        target_health('{"status": "error", "errorType": "bad_data", "error": "bad_data: x"}')
