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
from enclave.cli.update import (
    BEFORE_DRAIN_PLAYS,
    parse_max_fail,
    parse_serial,
    parse_vllm_version,
    roll_request,
    rollback_target,
)
from enclave.engine.build import VLLM_VERSION
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


@pytest.mark.parametrize("given", ["0.33.0", "1.0", " 0.32.1 ", "0.10.1.1"])
def test_a_vllm_version_is_a_release(given: str) -> None:
    assert parse_vllm_version(given) == given.strip()


@pytest.mark.parametrize("given", ["", "latest", "0.33.0+cpu", "v0.33.0", "0.33.0; rm -rf /", "1"])
def test_a_bad_vllm_version_is_refused_naming_the_flag(given: str) -> None:
    with pytest.raises(UsageError, match="--vllm-version"):
        parse_vllm_version(given)


def test_the_request_carries_the_vllm_version_only_when_given(tmp_path: Path) -> None:
    request = roll_request(tmp_path, PLAN, NEW, playbook="update.yml", vllm_version="0.33.0")
    assert request.extra_vars["update_vllm_version"] == "0.33.0"
    assert "update_vllm_version" not in roll_request(tmp_path, PLAN, NEW, playbook="rollback.yml").extra_vars
    with pytest.raises(UsageError, match="--vllm-version 'newest'"):
        roll_request(tmp_path, PLAN, NEW, playbook="update.yml", vllm_version="newest")


def test_the_kit_default_is_the_engine_roles_default() -> None:
    defaults = yaml.safe_load((PLAYBOOKS / "roles/engine/defaults/main.yml").read_text())
    assert defaults["engine_vllm_version"] == VLLM_VERSION


def test_no_plan_a_bad_revision_and_multi_node_replicas_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no plan"):
        roll_request(tmp_path, None, NEW, playbook="update.yml")
    for bad in ("../etc", "main", NEW.upper(), NEW[:39]):  # the inventory's rule: a 40-hex commit id
        with pytest.raises(UsageError, match="must be a 40-hex commit id"):
            roll_request(tmp_path, PLAN, bad, playbook="update.yml")
    spanning = {**PLAN, "replicas": [{"name": "replica-1", "hosts": ["gpu01", "gpu02"]}]}
    with pytest.raises(UsageError, match=r"replica-1 \(gpu01, gpu02\).*maintenance"):
        roll_request(tmp_path, spanning, NEW, playbook="rollback.yml")


def _state(current: str, activations: list[str], on_disk: list[str]) -> dict[str, Any]:
    return {"current": current, "activations": activations, "revisions": [{"revision": r} for r in on_disk]}


def _build(running: str, before: tuple[str, str] | None = None, after: tuple[str, str] | None = None
           ) -> dict[str, Any]:
    """The update role's report: the build the engine runs, and the record of the node's last move."""
    record = {} if before is None or after is None else {
        "before": {"revision": before[0], "vllm_version": before[1]},
        "after": {"revision": after[0], "vllm_version": after[1]}}
    return {"running": running, "record": record}


def test_rollback_goes_to_the_revision_activated_before_the_current_one() -> None:
    states = {"gpu01": _state(NEW, [OLD, NEW], [OLD, NEW]), "gpu02": _state(NEW, ["c" * 40, OLD, NEW], [OLD, NEW])}
    assert rollback_target(states, ["gpu01", "gpu02"]) == (OLD, "")
    builds = {h: _build("0.32.0") for h in states}  # no record (updated before records existed): the build stays
    assert rollback_target(states, ["gpu01", "gpu02"], builds) == (OLD, "0.32.0")


def test_rollback_skips_revisions_no_longer_on_disk_and_refuses_without_one() -> None:
    with pytest.raises(UsageError, match="gpu01: no earlier revision or vLLM version is kept on disk"):
        rollback_target({"gpu01": _state(NEW, [OLD, NEW], [NEW])}, ["gpu01"])
    # A record naming a revision pruned since is no way back either.
    with pytest.raises(UsageError, match="gpu01: no earlier"):
        rollback_target({"gpu01": _state(NEW, [OLD, NEW], [NEW])}, ["gpu01"],
                        {"gpu01": _build("0.33.0", (OLD, "0.32.0"), (NEW, "0.33.0"))})


def test_rollback_after_an_update_that_stopped_halfway_moves_back_only_the_nodes_that_moved() -> None:
    older = "c" * 40
    states = {"gpu01": _state(NEW, [older, OLD, NEW], [OLD, NEW]), "gpu02": _state(OLD, [older, OLD], [older, OLD]),
              "gpu03": _state(OLD, [OLD], [OLD])}
    assert rollback_target(states, ["gpu01", "gpu02", "gpu03"]) == (OLD, "")


def test_rollback_refuses_nodes_that_disagree_or_did_not_answer() -> None:
    states = {"gpu01": _state(NEW, [OLD, NEW], [OLD, NEW]), "gpu02": _state(NEW, ["c" * 40, NEW], ["c" * 40, NEW])}
    with pytest.raises(UsageError, match="disagree"):
        rollback_target(states, ["gpu01", "gpu02"])
    with pytest.raises(UsageError, match="gpu02: cannot read"):
        rollback_target({"gpu01": states["gpu01"]}, ["gpu01", "gpu02"])


def test_rollback_after_a_version_update_restores_the_version_and_keeps_the_revision() -> None:
    # The revision update before it (OLD -> NEW) is still in the activations: the record says the last move was
    # the version's only, so the revision stays.
    states = {h: _state(NEW, [OLD, NEW], [OLD, NEW]) for h in ("gpu01", "gpu02")}
    builds = {h: _build("0.33.0", (NEW, "0.32.0"), (NEW, "0.33.0")) for h in states}
    assert rollback_target(states, ["gpu01", "gpu02"], builds) == (NEW, "0.32.0")


def test_rollback_after_an_update_of_both_restores_both() -> None:
    states = {h: _state(NEW, [OLD, NEW], [OLD, NEW]) for h in ("gpu01", "gpu02")}
    builds = {h: _build("0.33.0", (OLD, "0.32.0"), (NEW, "0.33.0")) for h in states}
    assert rollback_target(states, ["gpu01", "gpu02"], builds) == (OLD, "0.32.0")


def test_rollback_after_a_version_update_that_stopped_halfway_moves_only_the_node_that_moved() -> None:
    states = {h: _state(NEW, [OLD, NEW], [OLD, NEW]) for h in ("gpu01", "gpu02")}
    builds = {"gpu01": _build("0.33.0", (NEW, "0.32.0"), (NEW, "0.33.0")),
              "gpu02": _build("0.32.0", (OLD, "0.32.0"), (NEW, "0.32.0"))}  # its record: the revision update
    assert rollback_target(states, ["gpu01", "gpu02"], builds) == (NEW, "0.32.0")


def test_a_record_older_than_what_the_node_runs_is_not_used() -> None:
    # A deploy changed the build after the last update: the record no longer describes how the node got here.
    states = {"gpu01": _state(NEW, [OLD, NEW], [OLD, NEW])}
    builds = {"gpu01": _build("0.34.0", (NEW, "0.32.0"), (NEW, "0.33.0"))}
    assert rollback_target(states, ["gpu01"], builds) == (OLD, "0.34.0")


def test_rollback_refuses_nodes_on_different_builds_with_nothing_recorded() -> None:
    states = {h: _state(NEW, [OLD, NEW], [OLD, NEW]) for h in ("gpu01", "gpu02")}
    builds = {"gpu01": _build("0.33.0"), "gpu02": _build("0.32.0")}
    with pytest.raises(UsageError, match=r"disagree.*gpu01: now b+, vLLM 0\.33\.0, before it a+, vLLM 0\.33\.0"):
        rollback_target(states, ["gpu01", "gpu02"], builds)


def test_a_node_without_an_engine_only_needs_the_revision_to_fit() -> None:
    states = {h: _state(NEW, [OLD, NEW], [OLD, NEW]) for h in ("gpu01", "gpu02")}
    builds = {"gpu01": _build("0.33.0", (OLD, "0.32.0"), (NEW, "0.33.0")), "gpu02": _build("", (OLD, ""), (NEW, ""))}
    assert rollback_target(states, ["gpu01", "gpu02"], builds) == (OLD, "0.32.0")


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
    builds = {h: _build(VLLM_VERSION) for h in states}
    monkeypatch.setattr(update_cli, "collect_rollback_state", lambda path, nodes: (states, builds))
    planfile.write(example, {**PLAN, "revision": NEW})
    result = runner.invoke(app, ["rollback", "-i", str(example)])
    assert result.exit_code == 0, result.output
    assert runs["requests"][0].playbook == "rollback.yml"
    assert runs["requests"][0].extra_vars["update_revision"] == OLD
    assert runs["requests"][0].extra_vars["update_vllm_version"] == VLLM_VERSION  # the build stays


def test_rollback_restores_the_version_the_nodes_recorded(runs: dict[str, Any], example: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    states = {h: _state(OLD, [OLD], [OLD]) for h in ("gpu01", "gpu02")}
    builds = {h: _build("0.33.0", (OLD, VLLM_VERSION), (OLD, "0.33.0")) for h in states}
    monkeypatch.setattr(update_cli, "collect_rollback_state", lambda path, nodes: (states, builds))
    result = runner.invoke(app, ["rollback", "-i", str(example)])
    assert result.exit_code == 0, result.output
    assert dict(runs["requests"][0].extra_vars) == {"update_revision": OLD, "update_vllm_version": VLLM_VERSION,
                                                    "update_serial": 1, "update_max_fail_percentage": 0}
    assert f"vLLM {VLLM_VERSION}" in result.output and "engine_vllm_version" not in result.output


def test_update_rolls_the_given_vllm_version_and_says_the_inventory_differs(runs: dict[str, Any],
                                                                           example: Path) -> None:
    result = runner.invoke(app, ["update", "-i", str(example), "--vllm-version", "0.33.0"])
    assert result.exit_code == 0, result.output
    assert dict(runs["requests"][0].extra_vars)["update_vllm_version"] == "0.33.0"
    assert runs["requests"][0].extra_vars["update_revision"] == OLD  # the inventory's: only the version moves
    assert f"{OLD} -> {OLD}, vLLM 0.33.0, batches of 1" in result.output
    assert f"engine_vllm_version is {VLLM_VERSION}" in result.output
    assert "switches every node's vLLM at once" in result.output
    assert planfile.read(example) == {**PLAN, "revision": OLD}  # the plan holds no engine version


def test_update_defaults_to_the_inventorys_vllm_version(runs: dict[str, Any], example: Path) -> None:
    (example / "group_vars" / "all" / "engine-version.yml").write_text("engine_vllm_version: '0.33.0'\n")
    result = runner.invoke(app, ["update", "-i", str(example), "--model-revision", NEW])
    assert result.exit_code == 0, result.output
    assert runs["requests"][0].extra_vars["update_vllm_version"] == "0.33.0"
    assert "engine_vllm_version is" not in result.output


def test_a_bad_vllm_version_exits_2_before_anything_runs(runs: dict[str, Any], example: Path) -> None:
    result = runner.invoke(app, ["update", "-i", str(example), "--vllm-version", "latest"])
    assert result.exit_code == 2
    assert "--vllm-version 'latest'" in result.output
    assert runs["requests"] == []


def test_an_update_stopped_at_staging_says_no_node_was_drained(runs: dict[str, Any], example: Path) -> None:
    runs["exit_code"] = 2
    runs["failures"] = [TaskFailure(host=h, task="Check the wheelhouse holds this engine build",
                                    play=BEFORE_DRAIN_PLAYS[0], message=f"{h}: http://w/ holds vLLM 0.32.0+cpu (cpu)")
                        for h in ("gpu01", "gpu02")]
    result = runner.invoke(app, ["update", "-i", str(example), "--vllm-version", "0.99.0"])
    assert result.exit_code == 2
    assert "gpu01: http://w/ holds vLLM 0.32.0+cpu" in result.output
    assert "stopped before any node was drained" in result.output and "stays out" not in result.output


# -- the playbooks ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("playbook", ["update.yml", "rollback.yml", "rollback-state.yml", "teardown.yml"])
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
    assert [p.get("hosts") for p in update] == ["enclave_nodes", "enclave_staging", "enclave_nodes", None]
    assert all(p["any_errors_fatal"] for p in update[:3])
    # The build first, on every node, without a restart: a wheelhouse without it stops before any byte moves.
    assert update[0]["vars"] == {"engine_restart": False}
    assert update[0]["tasks"][1]["ansible.builtin.import_role"] == {"name": "engine", "tasks_from": "stage"}
    assert update[0]["tasks"][1]["vars"]["engine_vllm_version"] == "{{ update_target_version }}"
    assert update[2]["tasks"][0]["vars"]["weights_activate"] is False
    assert update[3]["ansible.builtin.import_playbook"] == "roll.yml"
    check = yaml.safe_load((PLAYBOOKS / "roll.yml").read_text())[0]
    assert list(BEFORE_DRAIN_PLAYS) == [p["name"] for p in update[:3]] + [check["name"]]
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
                     "Switch current and restart the engine on the revision and build",
                     "Put the batch's replicas back into the rotation"]


def test_a_new_build_is_checked_then_installed_without_a_restart_and_the_roll_never_installs() -> None:
    engine = PLAYBOOKS / "roles/engine"
    install = [t["name"] for t in yaml.safe_load((engine / "tasks/install.yml").read_text())]
    # The wheelhouse check comes before anything is written on the node.
    assert install.index("Check the wheelhouse holds this engine build") < install.index("Create the engine venv")
    (handler,) = yaml.safe_load((engine / "handlers/main.yml").read_text())
    assert handler["when"] == "engine_restart | bool"
    assert yaml.safe_load((engine / "defaults/main.yml").read_text())["engine_restart"] is True
    block = yaml.safe_load((engine / "tasks/main.yml").read_text())[1]["block"]
    gated = {t["ansible.builtin.import_tasks"]: t.get("when") for t in block}
    assert gated["install.yml"] == "engine_install | bool" and gated["installed.yml"] == "not engine_install | bool"
    moves = yaml.safe_load((PLAYBOOKS / "roles/update/tasks/main.yml").read_text())[3]["block"]
    restart = moves[-1]
    assert restart["ansible.builtin.include_role"] == {"name": "engine"}
    assert restart["vars"]["engine_install"] is False
    assert restart["vars"]["engine_vllm_version"] == "{{ update_target_version }}"
    assert moves[0]["name"] == "Record what this node ran before it moves"
