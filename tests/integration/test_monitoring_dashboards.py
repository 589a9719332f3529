"""The shipped Grafana dashboards against the sandbox's real Prometheus: with each dashboard's variables set as
Grafana sets them (from label_values on the live series), every panel query returns series that carry the labels
its legend names. The unit tests prove this on synthetic series only; here the labels are the real exporters', the
real engine's and the kit's signals'. The GPU dashboard is skipped on a sandbox without GPUs (no DCGM target).
Read-only: it changes nothing on the hosts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_monitoring import api, prometheus_url, query
from tests.unit.test_monitoring_dashboards import _VARIABLE, DASHBOARDS, GRAFANA_BUILTINS, load, panels

# Panels that are empty on a healthy cluster by design: the last XID where one happened.
EMPTY_WHEN_HEALTHY = {("enclave-gpus", "Last XID error")}


@pytest.fixture(scope="module")
def prometheus(deployed: object, inventory: Path) -> str:
    return prometheus_url(inventory)


def variable_values(base: str, dashboard: dict[str, Any]) -> dict[str, str]:
    values = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        metric, label = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"]["query"]).groups()
        found = sorted(r["metric"].get(label, "") for r in query(base, f"group by ({label}) ({metric})"))
        assert found and found[0], f"{dashboard['uid']}: ${variable['name']} finds no {label} on {metric}"
        values[variable["name"]] = found[0]
    return values


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_every_panel_draws_live_series(prometheus: str, path: Path) -> None:
    dashboard = load(path)
    if dashboard["uid"] == "enclave-gpus" and not query(prometheus, 'up{job="dcgm"}'):
        pytest.skip("no DCGM target: the sandbox has no GPU")
    values = variable_values(prometheus, dashboard)
    problems = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            expr = _VARIABLE.sub(lambda m: GRAFANA_BUILTINS.get(m.group(1) or m.group(2))
                                 or values[m.group(1) or m.group(2)], target["expr"])
            result = api(prometheus, "/api/v1/query", query=expr)["result"]
            if not result and (dashboard["uid"], panel["title"]) not in EMPTY_WHEN_HEALTHY:
                problems.append(f"{panel['title']} {target['refId']}: {expr} returns nothing")
            for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
                if not all(label in series["metric"] for series in result):
                    problems.append(f"{panel['title']} {target['refId']}: no {label} label in {expr}")
    assert not problems, "\n".join(problems)
