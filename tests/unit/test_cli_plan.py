"""`enclave plan` on (a copy of) the shipped 2x8xH200 example inventory, with facts around recorded nvidia-smi
output. A copy: plan writes group_vars/all/enclave_plan.yml beside the inventory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from enclave.cli import app
from enclave.plan import planfile
from tests.unit.offline_cli import REV, SHIPPED, offline_deploy, write_facts, write_secrets
from tests.unit.recorded_facts import h200_node, host

runner = CliRunner()


def test_plan_shows_facts_and_is_ready(isolated_state: Path, tmp_path: Path, example: Path) -> None:
    result = runner.invoke(app, ["plan", "-i", str(example), "--facts", str(write_facts(tmp_path))],
                           env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    assert "8 x NVIDIA H200" in result.output and "143,771 MiB" in result.output
    assert "570.133.20" in result.output and "12.8" in result.output
    assert "ready to deploy" in result.output


def test_plan_on_the_example_matches_the_recipe_and_writes_the_plan_file(
        isolated_state: Path, tmp_path: Path, example: Path) -> None:
    facts = str(write_facts(tmp_path))
    result = runner.invoke(app, ["plan", "-i", str(example), "--facts", facts], env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    rows = [line.split("│") for line in result.output.splitlines() if line.startswith(" replica-")]
    # one replica per 8xH200 node, data parallel 8 with expert parallel (the vLLM DeepSeek-V4 recipe's form)
    assert [[c.strip() for c in row] for row in rows] == [
        ["replica-1", "gpu01", "8 x NVIDIA H200", "1", "1", "8", "yes"],
        ["replica-2", "gpu02", "8 x NVIDIA H200", "1", "1", "8", "yes"]]
    plan_file = example / "group_vars" / "all" / "enclave_plan.yml"
    assert f"plan written to {plan_file}" in result.output.replace("\n", "")
    text = plan_file.read_text()
    assert text.startswith("# Written by `enclave plan`")
    plan = yaml.safe_load(text)["enclave_plan"]
    assert (plan["version"], plan["model"], plan["revision"], plan["hardware_class"]) == (
        1, "deepseek-v4-flash", REV, "h200")
    assert plan["repo"] == "deepseek-ai/DeepSeek-V4-Flash" and plan["readiness_timeout_s"] == 3600
    assert plan["env"]["VLLM_ENGINE_READY_TIMEOUT_S"] == "3600"
    # no enclave_monitoring group: the gateway carries Prometheus and Alertmanager (enclave.plan.monitoring)
    assert plan["monitoring"] == {"host": "gw01"}
    args = plan["replicas"][0]["args"]
    assert "--trust-remote-code" in args and args[args.index("--kv-cache-dtype") + 1] == "fp8"
    assert args[args.index("--block-size") + 1] == "256" and "--enable-expert-parallel" in args

    # a rerun validates the inventory with the plan file in it and leaves the file alone
    mtime = plan_file.stat().st_mtime_ns
    again = runner.invoke(app, ["plan", "-i", str(example), "--facts", facts], env={"COLUMNS": "220"})
    assert again.exit_code == 0, again.output
    assert "plan unchanged" in again.output and plan_file.stat().st_mtime_ns == mtime


def test_plan_says_when_it_moves_the_nodes_off_the_revision_an_update_recorded(
        isolated_state: Path, tmp_path: Path, example: Path) -> None:
    facts = str(write_facts(tmp_path))
    assert runner.invoke(app, ["plan", "-i", str(example), "--facts", facts]).exit_code == 0
    updated = "f" * 40
    planfile.write(example, {**planfile.read(example), "revision": updated})  # what update's record play leaves
    result = runner.invoke(app, ["plan", "-i", str(example), "--facts", facts], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert f"the plan recorded revision {updated}" in result.output
    assert f"the inventory pins {REV}: the next deploy switches every node to it at once" in result.output
    again = runner.invoke(app, ["plan", "-i", str(example), "--facts", facts, "--json"])
    assert json.loads(again.output)["recorded_revision"] == REV and "recorded revision" not in again.output


def test_the_shipped_example_asks_for_a_revision(isolated_state: Path, tmp_path: Path) -> None:
    copy = tmp_path / "inv"
    shutil.copytree(SHIPPED, copy)
    result = runner.invoke(app, ["plan", "-i", str(copy), "--facts", str(write_facts(tmp_path))],
                           env={"COLUMNS": "220"})
    assert result.exit_code == 1
    assert "replica-2" in result.output  # the parallelism is still shown
    assert "no revision pinned for deepseek-v4-flash" in result.output and "enclave_model_revision" in result.output
    assert not (copy / "group_vars" / "all" / "enclave_plan.yml").exists()


def test_plan_refuses_pro_on_h100_nodes_that_cannot_hold_it(isolated_state: Path, tmp_path: Path,
                                                              example: Path) -> None:
    h100 = {"summary": "h100x8-default-table-565.txt", "module_version": "565.57.01",
            "packages": {"nvidia-driver-565-open": "565.57.01-1", "nvidia-fabricmanager-565": "565.57.01-1"}}
    facts = {"gpu01": h200_node(**{"address": "10.40.0.11/24", **h100}), "gw01": host(address="10.40.0.10/24")}
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(facts))
    (example / "hosts.yml").write_text((example / "hosts.yml").read_text().replace(
        "        gpu02: {ansible_host: 10.40.0.12}\n", ""))
    (example / "group_vars" / "all" / "pro.yml").write_text("enclave_model: deepseek-v4-pro\n")
    (example / "group_vars" / "all" / "model.yml").unlink()
    result = runner.invoke(app, ["plan", "-i", str(example), "--facts", str(path)], env={"COLUMNS": "400"})
    assert result.exit_code == 1
    assert "deepseek-v4-pro needs 960 GB" in result.output and "2 node(s) like gpu01" in result.output


def test_bad_parallelism_override_names_file_and_key(isolated_state: Path, tmp_path: Path, example: Path) -> None:
    (example / "group_vars" / "all" / "parallel.yml").write_text("enclave_parallelism: {pipline: 2}\n")
    result = runner.invoke(app, ["plan", "-i", str(example), "--facts", str(write_facts(tmp_path))],
                           env={"COLUMNS": "400"})
    assert result.exit_code == 2
    assert "parallel.yml: enclave_parallelism in group 'all': unknown key 'pipline'" in result.output


def test_parallelism_override_changes_the_plan(isolated_state: Path, tmp_path: Path, example: Path) -> None:
    (example / "group_vars" / "all" / "parallel.yml").write_text("enclave_parallelism: {tensor: 8}\n")
    result = runner.invoke(app, ["plan", "-i", str(example), "--facts", str(write_facts(tmp_path)), "--json"])
    assert result.exit_code == 0, result.output
    replicas = json.loads(result.output)["plan"]["replicas"]
    assert [(r["tensor_parallel"], r["data_parallel"], r["expert_parallel"]) for r in replicas] == [(8, 1, False)] * 2


def test_plan_refuses_and_says_why(isolated_state: Path, tmp_path: Path, example: Path) -> None:
    facts = write_facts(tmp_path, summary="h100x8-default-table-565.txt", module_version="565.57.01",
                        packages={"nvidia-driver-565-open": "565.57.01-1", "nvidia-fabricmanager-565": "565.57.01-1"})
    result = runner.invoke(app, ["plan", "-i", str(example), "--facts", str(facts)], env={"COLUMNS": "220"})
    assert result.exit_code == 1
    assert "mixed GPU models" in result.output and "refused" in result.output
    assert "engine nodes differ" in result.output


def test_plan_json(isolated_state: Path, tmp_path: Path, example: Path) -> None:
    result = runner.invoke(app, ["plan", "-i", str(example), "--facts", str(write_facts(tmp_path)), "--json"])
    data = json.loads(result.output)
    assert data["model"] == "deepseek-v4-flash"
    assert len(data["hosts"]["gpu01"]["gpus"]) == 8
    # the example pins branch 580 and the recorded hosts run 570: deploy says it will move them
    assert {(f["severity"], f["check"]) for f in data["findings"]} == {("info", "driver")}


def test_plan_with_facts_missing_a_host(isolated_state: Path, tmp_path: Path, example: Path) -> None:
    path = tmp_path / "facts.json"
    path.write_text(json.dumps({"gpu01": h200_node("10.40.0.11/24")}))
    result = runner.invoke(app, ["plan", "-i", str(example), "--facts", str(path)])
    assert result.exit_code == 2 and "no facts for gpu02, gw01" in result.output


def test_deploy_that_cannot_plan_stops_before_the_playbook(isolated_state: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "inv"
    shutil.copytree(SHIPPED, copy)  # no revision pinned
    write_secrets(copy)
    runs = offline_deploy(monkeypatch, write_facts(tmp_path))
    result = runner.invoke(app, ["deploy", "-i", str(copy)], env={"COLUMNS": "400"})
    assert result.exit_code == 1 and runs == []
    assert "PlanRefused" in result.output and "enclave_model_revision" in result.output
    assert not (copy / "group_vars" / "all" / "enclave_plan.yml").exists()


def test_deploy_writes_the_plan_then_runs_site(isolated_state: Path, tmp_path: Path, example: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    runs = offline_deploy(monkeypatch, write_facts(tmp_path))
    result = runner.invoke(app, ["deploy", "-i", str(example)], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    [request] = runs
    assert request.playbook == "site.yml" and "enclave_plan" not in request.extra_vars
    plan = yaml.safe_load((example / "group_vars" / "all" / "enclave_plan.yml").read_text())["enclave_plan"]
    assert [r["hosts"] for r in plan["replicas"]] == [["gpu01"], ["gpu02"]]

    # --check leaves the plan file alone and hands the plan to the run instead
    (example / "group_vars" / "all" / "enclave_plan.yml").unlink()
    result = runner.invoke(app, ["deploy", "-i", str(example), "--check"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert runs[1].extra_vars["enclave_plan"] == plan
    assert not (example / "group_vars" / "all" / "enclave_plan.yml").exists()


def test_model_options_turn_on_mtp_and_an_unknown_one_is_refused(isolated_state: Path, tmp_path: Path,
                                                                 example: Path) -> None:
    options = example / "group_vars" / "all" / "options.yml"
    options.write_text("enclave_model_options: [mtp]\n")
    result = runner.invoke(app, ["plan", "-i", str(example), "--facts", str(write_facts(tmp_path)), "--json"])
    assert result.exit_code == 0, result.output
    for replica in json.loads(result.output)["plan"]["replicas"]:
        args = replica["args"]
        assert args[args.index("--speculative-config") + 1] == '{"method":"mtp","num_speculative_tokens":1}'
    options.write_text("enclave_model_options: [mpt]\n")
    result = runner.invoke(app, ["plan", "-i", str(example), "--facts", str(write_facts(tmp_path))],
                           env={"COLUMNS": "400"})
    assert result.exit_code == 2
    assert "enclave_model_options: 'mpt' is not an option of the model profile deepseek-v4-flash" in result.output
    assert "Traceback" not in result.output
    options.write_text("enclave_model_options: mtp\n")
    result = runner.invoke(app, ["plan", "-i", str(example), "--facts", str(write_facts(tmp_path))],
                           env={"COLUMNS": "400"})
    assert result.exit_code == 2
    assert "options.yml: 'enclave_model_options' in group 'all' must be a list" in result.output
