"""The CLI through Typer's CliRunner: help, usage errors and their exit codes, logs of recorded runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from enclave import __version__
from enclave.cli import app
from enclave.cli.common import parse_extra_vars
from enclave.errors import UsageError
from enclave.runner import artifacts

runner = CliRunner()


def test_help_lists_the_verbs() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for verb in ("deploy", "logs", "sandbox"):
        assert verb in result.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_deploy_without_inventory_or_sandbox_is_a_usage_error(isolated_state: Path) -> None:
    result = runner.invoke(app, ["deploy"])
    assert result.exit_code == 2
    assert "no inventory" in result.output and "enclave sandbox up" in result.output
    assert "Traceback" not in result.output


def test_deploy_with_broken_inventory_exits_2_naming_the_problem(isolated_state: Path, tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  children:\n    enclave_nodes:\n      hosts:\n        n1: {}\n")
    result = runner.invoke(app, ["deploy", "-i", str(inventory)])
    assert result.exit_code == 2
    assert "InventoryError" in result.output and "'enclave_gateway'" in result.output
    assert not (isolated_state / "runs").exists(), "no run may start on a bad inventory"


def test_deploy_with_missing_inventory_file(isolated_state: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["deploy", "-i", str(tmp_path / "absent.yml")])
    assert result.exit_code == 2 and "no such inventory" in result.output


def test_bad_extra_vars_is_a_usage_error(isolated_state: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["deploy", "-i", str(tmp_path), "-e", "not-a-pair"])
    assert result.exit_code == 2


def test_sandbox_status_when_none_is_up(isolated_state: Path) -> None:
    result = runner.invoke(app, ["sandbox", "status", "--name", "nothere"])
    assert result.exit_code == 1 and "not up" in result.output


def test_sandbox_rejects_a_bad_name(isolated_state: Path) -> None:
    result = runner.invoke(app, ["sandbox", "status", "--name", "Bad_Name"])
    assert result.exit_code == 2 and "sandbox name" in result.output


def test_logs_without_runs(isolated_state: Path) -> None:
    result = runner.invoke(app, ["logs"])
    assert result.exit_code == 2 and "no runs recorded" in result.output


def _recorded_run(state: Path, name: str, summary: dict) -> Path:
    run_dir = state / "runs" / name
    run_dir.mkdir(parents=True)
    artifacts.write_summary(run_dir, summary)
    return run_dir


def test_logs_shows_the_last_runs_failures(isolated_state: Path) -> None:
    hosts = {"node1": {"ok": 11, "changed": 0, "failed": 1, "unreachable": 0, "skipped": 2, "rescued": 0,
                       "ignored": 0}}
    _recorded_run(isolated_state, "20260101-000000-site-aaaaaa", {"playbook": "site.yml", "status": "successful",
                                                                  "hosts": {}, "failures": []})
    _recorded_run(isolated_state, "20260102-000000-site-bbbbbb", {
        "playbook": "site.yml", "inventory": "/inv/hosts.yml", "status": "failed", "seconds": 9.8, "hosts": hosts,
        "failures": [{"host": "node1", "task": "Install the base packages", "play": "Provision",
                      "message": "No package matching 'nope' is available", "unreachable": False}]})
    result = runner.invoke(app, ["logs"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "20260102-000000-site-bbbbbb" in result.output
    assert "node1" in result.output and "Install the base packages" in result.output
    assert "No package matching 'nope' is available" in result.output

    older = runner.invoke(app, ["logs", "20260101"], env={"COLUMNS": "200"})
    assert older.exit_code == 0 and "no failures" in older.output

    listing = runner.invoke(app, ["logs", "--list"], env={"COLUMNS": "200"})
    assert "20260101-000000-site-aaaaaa" in listing.output and "failed" in listing.output


def test_logs_unknown_run(isolated_state: Path) -> None:
    _recorded_run(isolated_state, "20260101-000000-site-aaaaaa", {"status": "successful"})
    result = runner.invoke(app, ["logs", "nope"])
    assert result.exit_code == 2 and "not found" in result.output


@pytest.mark.parametrize(("given", "expected"), [
    (["a=1", "b=x=y"], {"a": "1", "b": "x=y"}),
    (['{"n": 2, "l": [1]}'], {"n": 2, "l": [1]}),
])
def test_parse_extra_vars(given: list[str], expected: dict) -> None:
    assert parse_extra_vars(given) == expected


def test_parse_extra_vars_from_file(tmp_path: Path) -> None:
    file = tmp_path / "vars.yml"
    file.write_text("hf_token: secret\nbase_extra_packages: [htop]\n")
    assert parse_extra_vars([f"@{file}", "x=1"]) == {"hf_token": "secret", "base_extra_packages": ["htop"],
                                                      "x": "1"}


@pytest.mark.parametrize("bad", ["novalue", "{not json", "1bad=x", "@/does/not/exist"])
def test_parse_extra_vars_rejects(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_extra_vars([bad])


def test_summary_is_private(isolated_state: Path) -> None:
    run_dir = _recorded_run(isolated_state, "r", {"status": "x"})
    assert (run_dir / "summary.json").stat().st_mode & 0o077 == 0
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "x"
