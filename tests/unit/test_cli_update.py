"""`enclave update` / `enclave rollback`: argument handling, the revision rollback chooses, what the CLI does after
a run that succeeded or stopped, and the structure of the rolling playbooks (ansible-playbook --syntax-check).
Playbook runs are replaced at their boundary; the inventory is the shipped example, validated for real."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from enclave.cli import app
from enclave.cli import update as update_cli
from enclave.cli.update import parse_max_fail, parse_serial, roll_request, rollback_target
from enclave.errors import UsageError
from enclave.plan import planfile
from enclave.plan.inventory import validate
from enclave.runner import RunProgress
from enclave.runner.events import TaskFailure
from tests.unit.test_cli_plan import SHIPPED

runner = CliRunner()
PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"
OLD, NEW = "a" * 40, "b" * 40
PLAN = {"version": 1, "repo": "deepseek-ai/DeepSeek-V4-Flash", "revision": OLD, "port": 8000,
        "replicas": [{"name": "replica-1", "hosts": ["gpu01"]}, {"name": "replica-2", "hosts": ["gpu02"]}]}


@pytest.mark.parametrize(("given", "parsed"), [("1", 1), ("3", 3), ("25%", "25%"), (" 100% ", "100%")])
def test_serial_is_a_count_or_a_percentage(given: str, parsed: int | str) -> None:
    assert parse_serial(given) == parsed


@pytest.mark.parametrize("given", ["0", "-1", "101%", "half", "2.5", ""])
def test_bad_serial_is_refused(given: str) -> None:
    with pytest.raises(UsageError, match="--serial"):
        parse_serial(given)


@pytest.mark.parametrize(("given", "parsed"), [("0%", 0), ("0", 0), ("50%", 50), ("100%", 100)])
def test_max_fail_is_a_percentage(given: str, parsed: int) -> None:
    assert parse_max_fail(given) == parsed


@pytest.mark.parametrize("given", ["-5%", "101%", "many", ""])
def test_bad_max_fail_is_refused(given: str) -> None:
    with pytest.raises(UsageError, match="--max-fail"):
        parse_max_fail(given)


def test_the_request_carries_the_revision_and_the_batching(tmp_path: Path) -> None:
    request = roll_request(tmp_path, PLAN, NEW, playbook="update.yml", serial="50%", max_fail="50%")
    assert request.playbook == "update.yml"
    assert dict(request.extra_vars) == {"update_revision": NEW, "update_serial": "50%",
                                        "update_max_fail_percentage": 50}


def test_no_plan_a_bad_revision_and_multi_node_replicas_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no plan"):
        roll_request(tmp_path, None, NEW, playbook="update.yml")
    with pytest.raises(UsageError, match="not a revision name"):
        roll_request(tmp_path, PLAN, "../etc", playbook="update.yml")
    spanning = {**PLAN, "replicas": [{"name": "replica-1", "hosts": ["gpu01", "gpu02"]}]}
    with pytest.raises(UsageError, match=r"replica-1 \(gpu01, gpu02\).*maintenance"):
        roll_request(tmp_path, spanning, NEW, playbook="rollback.yml")


def _state(current: str, activations: list[str], on_disk: list[str]) -> dict[str, Any]:
    return {"current": current, "activations": activations, "revisions": [{"revision": r} for r in on_disk]}


def test_rollback_goes_to_the_revision_activated_before_the_current_one() -> None:
    states = {"gpu01": _state(NEW, [OLD, NEW], [OLD, NEW]), "gpu02": _state(NEW, ["c" * 40, OLD, NEW], [OLD, NEW])}
    assert rollback_target(states, ["gpu01", "gpu02"]) == OLD


def test_rollback_skips_revisions_no_longer_on_disk_and_refuses_without_one() -> None:
    with pytest.raises(UsageError, match="gpu01: no earlier revision is kept on disk"):
        rollback_target({"gpu01": _state(NEW, [OLD, NEW], [NEW])}, ["gpu01"])


def test_rollback_after_an_update_that_stopped_halfway_moves_back_only_the_nodes_that_moved() -> None:
    older = "c" * 40
    states = {"gpu01": _state(NEW, [older, OLD, NEW], [OLD, NEW]), "gpu02": _state(OLD, [older, OLD], [older, OLD]),
              "gpu03": _state(OLD, [OLD], [OLD])}
    assert rollback_target(states, ["gpu01", "gpu02", "gpu03"]) == OLD


def test_rollback_refuses_nodes_that_disagree_or_did_not_answer() -> None:
    states = {"gpu01": _state(NEW, [OLD, NEW], [OLD, NEW]), "gpu02": _state(NEW, ["c" * 40, NEW], ["c" * 40, NEW])}
    with pytest.raises(UsageError, match="disagree"):
        rollback_target(states, ["gpu01", "gpu02"])
    with pytest.raises(UsageError, match="gpu02: cannot read"):
        rollback_target({"gpu01": states["gpu01"]}, ["gpu01", "gpu02"])


@pytest.fixture
def example(tmp_path: Path) -> Path:
    copy = tmp_path / "h200-cluster"
    shutil.copytree(SHIPPED, copy)
    (copy / "group_vars" / "all" / "revision.yml").write_text(f"enclave_model_revision: {OLD}\n")
    planfile.write(copy, PLAN)
    return copy


@pytest.fixture
def runs(isolated_state: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {"requests": [], "exit_code": 0, "failures": []}

    def run(request: Any, *args: Any, **kwargs: Any) -> Any:
        seen["requests"].append(request)
        progress = RunProgress(failures=seen["failures"])
        return type("Result", (), {"exit_code": seen["exit_code"], "progress": progress})()

    monkeypatch.setattr(update_cli, "run_with_progress", run)
    monkeypatch.setattr(update_cli, "validate", functools.partial(validate, reachable=False))
    return seen


def test_a_finished_update_records_the_revision_in_the_plan_and_names_the_inventory_setting(
        runs: dict[str, Any], example: Path) -> None:
    result = runner.invoke(app, ["update", "-i", str(example), "--model-revision", NEW, "--serial", "1"])
    assert result.exit_code == 0, result.output
    assert runs["requests"][0].extra_vars["update_revision"] == NEW
    assert planfile.read(example)["revision"] == NEW
    assert f"enclave_model_revision: {OLD}" in result.output and "switches every node back" in result.output


def test_update_defaults_to_the_inventorys_revision(runs: dict[str, Any], example: Path) -> None:
    (example / "group_vars" / "all" / "revision.yml").write_text(f"enclave_model_revision: {NEW}\n")
    result = runner.invoke(app, ["update", "-i", str(example)])
    assert result.exit_code == 0, result.output
    assert runs["requests"][0].extra_vars["update_revision"] == NEW
    assert "switches every node back" not in result.output


def test_a_stopped_update_names_the_host_and_why_and_keeps_the_plan(runs: dict[str, Any], example: Path) -> None:
    runs["exit_code"] = 1
    runs["failures"] = [TaskFailure(host="gpu02", task="Report the engine failure", play="Move the nodes",
                                    message="gpu02: the engine (replica-2, rank 0) is not ready: ...")]
    result = runner.invoke(app, ["update", "-i", str(example), "--model-revision", NEW])
    assert result.exit_code == 1
    assert "gpu02: the engine (replica-2, rank 0) is not ready" in result.output
    assert "stays out of the gateway's rotation" in result.output
    assert planfile.read(example)["revision"] == OLD


def test_rollback_asks_for_the_kept_revision(runs: dict[str, Any], example: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    states = {h: _state(NEW, [OLD, NEW], [OLD, NEW]) for h in ("gpu01", "gpu02")}
    monkeypatch.setattr(update_cli, "collect_status", lambda path, limit=None: states)
    planfile.write(example, {**PLAN, "revision": NEW})
    result = runner.invoke(app, ["rollback", "-i", str(example)])
    assert result.exit_code == 0, result.output
    assert runs["requests"][0].playbook == "rollback.yml"
    assert runs["requests"][0].extra_vars["update_revision"] == OLD


# -- the playbooks ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("playbook", ["update.yml", "rollback.yml", "teardown.yml"])
def test_the_playbooks_pass_ansible_syntax_check(playbook: str, tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(yaml.safe_dump({"all": {"children": {g: {"hosts": {"h1": None}} for g in
                                                           ("enclave_nodes", "enclave_gateway", "enclave_staging")}}}))
    argv = [str(Path(sys.executable).with_name("ansible-playbook")), "--syntax-check", "-i", str(hosts),
            str(PLAYBOOKS / playbook)]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=PLAYBOOKS.parent, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_update_places_the_revision_everywhere_before_the_rolling_plays() -> None:
    update = yaml.safe_load((PLAYBOOKS / "update.yml").read_text())
    assert [p.get("hosts") for p in update] == ["enclave_staging", "enclave_nodes", None]
    assert update[0]["any_errors_fatal"] and update[1]["any_errors_fatal"]
    assert update[1]["tasks"][0]["vars"]["weights_activate"] is False
    assert update[2]["ansible.builtin.import_playbook"] == "roll.yml"
    rollback = yaml.safe_load((PLAYBOOKS / "rollback.yml").read_text())
    assert rollback == [{"name": rollback[0]["name"], "ansible.builtin.import_playbook": "roll.yml"}]


def test_the_rolling_play_checks_every_node_first_then_moves_batches() -> None:
    check, roll = yaml.safe_load((PLAYBOOKS / "roll.yml").read_text())
    assert check["any_errors_fatal"] and check["tasks"][0]["ansible.builtin.import_role"]["tasks_from"] == "check"
    assert roll["serial"] == "{{ update_serial | default(1) }}"
    assert roll["max_fail_percentage"] == "{{ update_max_fail_percentage | default(0) }}"
    steps = [t["name"] for t in yaml.safe_load((PLAYBOOKS / "roles/update/tasks/main.yml").read_text())]
    assert steps == ["Check the update's settings", "Find what this node serves now",
                     "Take the batch's replicas out of the rotation and let their requests finish",
                     "Switch current and restart the engine on the revision",
                     "Put the batch's replicas back into the rotation"]
