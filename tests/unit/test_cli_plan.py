"""`enclave plan` on the shipped 2x8xH200 example inventory, with facts around recorded nvidia-smi output."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from enclave import paths
from enclave.cli import app
from tests.unit.recorded_facts import h200_node, host

runner = CliRunner()
EXAMPLE = paths.share_dir() / "inventory" / "h200-cluster"


def write_facts(tmp_path: Path, **gpu02: object) -> Path:
    facts = {"gpu01": h200_node("10.40.0.11/24"), "gpu02": h200_node(**{"address": "10.40.0.12/24", **gpu02}),
             "gw01": host(address="10.40.0.10/24", free_gb=900)}
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(facts))
    return path


def test_plan_shows_facts_and_is_ready(isolated_state: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["plan", "-i", str(EXAMPLE), "--facts", str(write_facts(tmp_path))],
                           env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    assert "8 x NVIDIA H200" in result.output and "143,771 MiB" in result.output
    assert "570.133.20" in result.output and "12.8" in result.output
    assert "ready to deploy" in result.output


def test_plan_refuses_and_says_why(isolated_state: Path, tmp_path: Path) -> None:
    facts = write_facts(tmp_path, summary="h100x8-default-table-565.txt", module_version="565.57.01",
                        packages={"nvidia-driver-565-open": "565.57.01-1", "nvidia-fabricmanager-565": "565.57.01-1"})
    result = runner.invoke(app, ["plan", "-i", str(EXAMPLE), "--facts", str(facts)], env={"COLUMNS": "220"})
    assert result.exit_code == 1
    assert "mixed GPU models" in result.output and "refused" in result.output


def test_plan_json(isolated_state: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["plan", "-i", str(EXAMPLE), "--facts", str(write_facts(tmp_path)), "--json"])
    data = json.loads(result.output)
    assert data["model"] == "deepseek-v4-flash"
    assert len(data["hosts"]["gpu01"]["gpus"]) == 8
    # the example pins branch 580 and the recorded hosts run 570: deploy says it will move them
    assert {(f["severity"], f["check"]) for f in data["findings"]} == {("info", "driver")}


def test_plan_with_facts_missing_a_host(isolated_state: Path, tmp_path: Path) -> None:
    path = tmp_path / "facts.json"
    path.write_text(json.dumps({"gpu01": h200_node("10.40.0.11/24")}))
    result = runner.invoke(app, ["plan", "-i", str(EXAMPLE), "--facts", str(path)])
    assert result.exit_code == 2 and "no facts for gpu02, gw01" in result.output
