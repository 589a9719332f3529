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

from enclave.cli import app, common
from enclave.cli import update as update_cli
from enclave.contract import BEFORE_DRAIN_PLAYS
from enclave.engine.build import VLLM_VERSION
from enclave.plan import planfile
from enclave.runner import RunProgress
from enclave.runner.events import TaskFailure
from enclave.runner.inventory import validate
from tests.unit.offline_cli import SHIPPED
from tests.unit.test_rollout import NEW, OLD, PLAN, _build, _state

runner = CliRunner()
PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"


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
    monkeypatch.setattr(common, "validate", functools.partial(validate, reachable=False))
    return seen


def test_a_finished_update_leaves_the_plan_to_the_playbook_and_names_the_inventory_setting(
        runs: dict[str, Any], example: Path) -> None:
    result = runner.invoke(app, ["update", "-i", str(example), "--model-revision", NEW, "--serial", "1"])
    assert result.exit_code == 0, result.output
    assert runs["requests"][0].extra_vars["update_revision"] == NEW
    # The rolling playbook records the revision (test_the_record_play_*); a run that did not write it (here the
    # run is replaced) leaves the plan alone and the CLI claims no plan change.
    assert planfile.read(example)["revision"] == OLD and "plan updated" not in result.output
    assert f"enclave_model_revision: {OLD}" in result.output and "switches every node back" in result.output


def test_a_finished_update_reports_the_plan_the_playbook_wrote(runs: dict[str, Any], example: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def run(request: Any, *args: Any, **kwargs: Any) -> Any:
        planfile.write(example, {**PLAN, "revision": request.extra_vars["update_revision"]})
        return type("Result", (), {"exit_code": 0, "progress": RunProgress()})()

    monkeypatch.setattr(update_cli, "run_with_progress", run)
    result = runner.invoke(app, ["update", "-i", str(example), "--model-revision", NEW])
    assert result.exit_code == 0, result.output
    assert f"plan updated: revision {NEW}" in result.output


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
    monkeypatch.setattr(update_cli, "rollback_state", lambda path, nodes: (states, builds))
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
    monkeypatch.setattr(update_cli, "rollback_state", lambda path, nodes: (states, builds))
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
    check, roll, _record = yaml.safe_load((PLAYBOOKS / "roll.yml").read_text())
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


# -- the plan record, run for real by ansible-playbook on local "nodes" ---------------------------------------------
RECORD_PLAY = "Record the revision in the plan"


def _record(tmp_path: Path, inventory: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """roll.yml's record play alone (the shipped play, unchanged), after a play that can fail a node first."""
    (record,) = [p for p in yaml.safe_load((PLAYBOOKS / "roll.yml").read_text()) if p["name"] == RECORD_PLAY]
    fail = {"name": "Fail the nodes named in fail_nodes", "hosts": "enclave_nodes", "gather_facts": False,
            "tasks": [{"name": "Fail", "ansible.builtin.fail": {"msg": "failed on purpose"},
                       "when": "inventory_hostname in fail_nodes | default([])"}]}
    playbook = tmp_path / "record.yml"
    playbook.write_text(yaml.safe_dump([fail, record], sort_keys=False))
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
           "ANSIBLE_CONFIG": str(PLAYBOOKS.parent / "ansible.cfg"),
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "t"),
           "ANSIBLE_FACT_CACHING_CONNECTION": str(tmp_path / "facts"), "ANSIBLE_NOCOLOR": "1"}
    argv = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(inventory), str(playbook), *options]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)


@pytest.fixture
def local_nodes(tmp_path: Path) -> Path:
    inventory = tmp_path / "inv"
    hosts = {h: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable} for h in ("n1", "n2")}
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {"enclave_nodes": {"hosts": hosts}}}}))
    planfile.write(inventory, {**PLAN, "revision": OLD})
    return inventory


def test_the_record_play_writes_the_revision_as_enclave_plan_does_and_a_rerun_changes_nothing(
        tmp_path: Path, local_nodes: Path) -> None:
    checked = _record(tmp_path, local_nodes / "hosts.yml", "-e", f"update_revision={NEW}", "--check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert planfile.read(local_nodes)["revision"] == OLD  # check mode reports, writes nothing

    proc = _record(tmp_path, local_nodes / "hosts.yml", "-e", f"update_revision={NEW}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "changed=1" in proc.stdout
    assert planfile.plan_path(local_nodes).read_text() == planfile.render({**PLAN, "revision": NEW})

    again = _record(tmp_path, local_nodes / "hosts.yml", "-e", f"update_revision={NEW}")
    assert again.returncode == 0 and "changed=1" not in again.stdout, again.stdout


@pytest.mark.parametrize(("options", "why"), [
    (["-e", "{\"fail_nodes\": [\"n2\"]}"], "a node failed"),
    (["--limit", "n1"], "not every node was in the run"),
])
def test_the_record_play_keeps_the_plan_unless_every_node_moved(tmp_path: Path, local_nodes: Path,
                                                                 options: list[str], why: str) -> None:
    before = planfile.plan_path(local_nodes).read_text()
    proc = _record(tmp_path, local_nodes / "hosts.yml", "-e", f"update_revision={NEW}", *options)
    assert "skipping: [n1]" in proc.stdout, (why, proc.stdout)
    assert planfile.plan_path(local_nodes).read_text() == before, why


def test_the_record_play_refuses_a_branch_name(tmp_path: Path, local_nodes: Path) -> None:
    proc = _record(tmp_path, local_nodes / "hosts.yml", "-e", "update_revision=main")
    assert proc.returncode != 0
    assert "update_revision must be a 40-hex commit id (lower case), got 'main'" in proc.stdout
    assert planfile.read(local_nodes)["revision"] == OLD
