"""The short verify at the end of `enclave deploy`: when it runs, on which hosts and checks, what it prints and
how a failed check sets the exit code. The playbook run and the check run are replaced at their boundaries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from enclave.checks.results import CheckResult
from enclave.cli import app
from enclave.cli import results as results_cli
from enclave.cli.results import check_modules_for_tags
from enclave.runner import HostTally, RunProgress
from tests.unit.offline_cli import offline_deploy, write_facts

runner = CliRunner()
PASSING = [CheckResult("gpu01", "base", "service_user", "passed"), CheckResult("gw01", "nvidia", "driver_loaded",
                                                                                "skipped", "no GPU")]
FAILING = [*PASSING, CheckResult("gpu02", "base", "time_sync", "failed", "chrony is not running")]


@pytest.fixture
def deploy(isolated_state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Offline deploy whose playbook run succeeds on gpu01 and gpu02, with the check run recorded."""
    from enclave.cli import deploy as deploy_cli

    offline_deploy(monkeypatch, write_facts(tmp_path))
    seen: dict[str, Any] = {"checks": [], "results": PASSING}

    def run(request: Any, *args: Any, **kwargs: Any) -> Any:
        progress = RunProgress(hosts={"gpu01": HostTally(ok=3), "gpu02": HostTally(ok=3)})
        return type("Result", (), {"exit_code": seen.get("exit_code", 0), "progress": progress})()

    def checks(inventory: Path, **kwargs: Any) -> tuple[list[CheckResult], str]:
        seen["checks"].append(kwargs)
        return seen["results"], ""

    monkeypatch.setattr(deploy_cli, "run_with_progress", run)
    monkeypatch.setattr(deploy_cli, "short_verify", results_cli.short_verify)
    monkeypatch.setattr(results_cli, "run_checks", checks)
    return seen


def test_a_successful_deploy_ends_with_the_short_verify(deploy: dict[str, Any], example: Path) -> None:
    result = runner.invoke(app, ["deploy", "-i", str(example)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert deploy["checks"] == [{"hosts": None, "modules": ()}]  # every host, every concern, never --deep
    assert "verify: 1 passed, 0 failed, 1 skipped; `enclave verify` runs every check" in result.output
    assert "service_user" not in result.output  # only failing checks are listed


def test_a_failed_check_fails_the_deploy_and_is_listed(deploy: dict[str, Any], example: Path) -> None:
    deploy["results"] = FAILING
    result = runner.invoke(app, ["deploy", "-i", str(example)], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "verify: 1 passed, 1 failed, 1 skipped" in result.output
    assert "gpu02" in result.output and "time_sync" in result.output and "chrony is not running" in result.output
    assert "service_user" not in result.output


def test_limit_and_tags_narrow_the_checks_to_what_the_run_touched(deploy: dict[str, Any], example: Path) -> None:
    result = runner.invoke(app, ["deploy", "-i", str(example), "--limit", "gpu*", "--tags", "base"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert deploy["checks"] == [{"hosts": ["gpu01", "gpu02"], "modules": ("test_base.py",)}]
    assert "on gpu01, gpu02 (base)" in result.output


@pytest.mark.parametrize("flag", ["--no-verify", "--check"])
def test_no_verify_and_check_skip_it(deploy: dict[str, Any], example: Path, flag: str) -> None:
    deploy["results"] = FAILING
    result = runner.invoke(app, ["deploy", "-i", str(example), flag], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert deploy["checks"] == [] and "verify:" not in result.output


def test_a_failed_run_is_not_verified(deploy: dict[str, Any], example: Path) -> None:
    deploy["exit_code"] = 1
    result = runner.invoke(app, ["deploy", "-i", str(example)], env={"COLUMNS": "200"})
    assert result.exit_code == 1 and deploy["checks"] == []


def test_tags_that_name_no_concern_run_every_check() -> None:
    assert check_modules_for_tags(("weights-stage",)) == ()
    assert check_modules_for_tags(("nvidia", "base", "base")) == ("test_base.py", "test_nvidia.py")
