"""`enclave status` through the CLI, with the playbook run replaced at the driver boundary by recorded-shaped
events (what ansible-runner hands run_playbook's on_event), on a copy of the shipped example inventory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from enclave import paths
from enclave.cli import app
from enclave.cli import status as status_cli
from enclave.contract import GATEWAY_STATUS_TASK as GATEWAY_TASK
from enclave.contract import NODE_STATUS_TASK as NODE_TASK
from enclave.plan import planfile
from enclave.runner import PlaybookRequest, RunProgress, RunResult
from enclave.runner import collect as runner_collect
from enclave.runner.inventory import validate
from enclave.status import collect

runner = CliRunner()
REV = "0123456789abcdef0123456789abcdef01234567"
SMI = Path(__file__).parent / "fixtures" / "nvidia-smi"
PLAN = {"repo": "deepseek-ai/DeepSeek-V4-Flash", "revision": REV, "served_model_name": "deepseek-v4-flash",
        "port": 8000,
        "replicas": [{"name": "replica-1", "hosts": ["gpu01"]}, {"name": "replica-2", "hosts": ["gpu02"]}]}


@pytest.fixture
def inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_state: Path) -> Path:
    copy = tmp_path / "h200-cluster"
    shutil.copytree(paths.share_dir() / "inventory" / "h200-cluster", copy)
    (copy / "group_vars" / "all" / "revision.yml").write_text(f"enclave_model_revision: {REV}\n")
    planfile.write(copy, PLAN)
    monkeypatch.setattr(status_cli, "validate", lambda path, **kw: validate(path, reachable=False, **kw))
    return copy


def node(tokens: float, at: float, *, active: str = "active", samples: int = 2) -> dict[str, Any]:
    pages = [{"at": at + 2 * i, "status": 200,
              "text": f'vllm:num_requests_running{{engine="0",model_name="m"}} 3.0\n'
                      f'vllm:num_requests_waiting{{engine="0",model_name="m"}} 1.0\n'
                      f'vllm:generation_tokens_total{{engine="0",model_name="m"}} {tokens + 100 * i}\n'}
             for i in range(samples)]
    return {"engine": {"LoadState": "loaded", "ActiveState": active, "Result": "success"}, "current": REV,
            "gpus": {"csv": (SMI / "a100x8-query-status-csv.txt").read_text()}, "health": {"status": 200},
            "metrics": pages}


def ok(host: str, task: str, res: dict[str, Any]) -> dict[str, Any]:
    return {"event": "runner_on_ok", "event_data": {"host": host, "task": task, "res": res}}


class FakeRuns:
    """Stands in for run_playbook: replays one list of events per call and records the requests."""

    def __init__(self, rounds: list[list[dict[str, Any]]], after: Callable[[int], None] | None = None) -> None:
        self.rounds, self.after = rounds, after
        self.requests: list[PlaybookRequest] = []
        self.runs_dirs: list[Path] = []

    def __call__(self, request: PlaybookRequest, *, on_event: Any, cancel: threading.Event | None = None,
                 runs_dir: Path | None = None, keep: int = 20) -> RunResult:
        self.requests.append(request)
        self.runs_dirs.append(runs_dir or Path())
        progress = RunProgress()
        for event in self.rounds[min(len(self.requests), len(self.rounds)) - 1]:
            progress.feed(event)
            on_event(event, progress)
        if self.after:
            self.after(len(self.requests))
        bad = any(f for f in progress.failures)
        return RunResult(Path("/nonexistent/run"), "failed" if bad else "successful", 2 if bad else 0, progress, 1.0)


def gateway(drained: list[str] | None = None) -> dict[str, Any]:
    return ok("gw01", GATEWAY_TASK, {"msg": {"nginx": "active", "drained": drained or [],
                                             "replicas": ["gpu01", "gpu02"]}})


def healthy_round(at: float = 1000.0, samples: int = 2) -> list[dict[str, Any]]:
    return [ok("gpu01", NODE_TASK, {"stdout": json.dumps(node(500, at, samples=samples))}),
            ok("gpu02", NODE_TASK, {"stdout": json.dumps(node(0, at, samples=samples))}), gateway()]


def test_all_serving_shows_one_screen_and_exits_0(inventory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRuns([healthy_round()])
    monkeypatch.setattr(runner_collect, "run_playbook", fake)
    result = runner.invoke(app, ["status", "-i", str(inventory)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "deepseek-ai/DeepSeek-V4-Flash@0123456789ab" in out
    assert "8x NVIDIA A100-SXM4-80GB: 333/640 GiB, util 46% (max 99%)" in out
    assert "3 running, 1 waiting" in out and "50.0" in out  # 100 tokens in 2 s
    assert "serving: 2 of 2 replicas" in out and "gateway gw01: nginx active, drained: none" in out
    [request] = fake.requests
    assert request.playbook == "status.yml" and request.extra_vars["engine_status_samples"] == 2
    assert fake.runs_dirs[0] == paths.state_dir() / collect.RUNS_SUBDIR  # never prunes deploy's run dirs


def test_json_names_each_problem_and_exits_1(inventory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    failed = node(0, 0)
    failed["engine"] = {"LoadState": "loaded", "ActiveState": "failed", "Result": "exit-code"}
    failed["health"] = {"error": "[Errno 111] Connection refused"}
    events = [ok("gpu01", NODE_TASK, {"stdout": json.dumps(failed)}),
              {"event": "runner_on_unreachable",
               "event_data": {"host": "gpu02", "task": "Gathering Facts", "res": {"msg": "ssh: connect timed out"}}},
              gateway(drained=["gpu01"])]
    monkeypatch.setattr(runner_collect, "run_playbook", FakeRuns([events]))
    result = runner.invoke(app, ["status", "-i", str(inventory), "--json"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert data["serving"] is False
    assert data["nodes"]["gpu01"]["engine"] == "failed" and data["nodes"]["gpu01"]["rotation"] == "drained"
    assert data["nodes"]["gpu01"]["problems"] == [
        "engine is failed (exit-code)", "/health: [Errno 111] Connection refused",
        "drained at the gateway (`enclave undrain` puts it back)"]
    assert data["nodes"]["gpu02"]["engine"] == "unreachable"
    assert "ssh: connect timed out" in data["nodes"]["gpu02"]["problems"][0]
    assert data["nodes"]["gpu01"]["gpus"][0] == {"index": 0, "name": "NVIDIA A100-SXM4-80GB",
                                                 "memory_used_mib": 66147.0, "memory_total_mib": 81920.0,
                                                 "utilization_pct": 99.0}


def test_watch_without_a_terminal_prints_lines_each_round_and_ctrl_c_exits_0(
        inventory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt_after_second(calls: int) -> None:
        if calls == 2:
            os.kill(os.getpid(), signal.SIGINT)

    fake = FakeRuns([healthy_round(1000.0, samples=1), healthy_round(1005.0, samples=1)], interrupt_after_second)
    monkeypatch.setattr(runner_collect, "run_playbook", fake)
    result = runner.invoke(app, ["status", "-i", str(inventory), "--watch", "--interval", "1"],
                           env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert len(fake.requests) == 2 and fake.requests[0].extra_vars["engine_status_samples"] == 1
    lines = [ln for ln in result.output.splitlines() if " gpu01: " in ln]
    assert len(lines) == 2
    assert "tokens/s=?" in lines[0]  # the first round has nothing to compare with
    assert "tokens/s=0.0" in lines[1]  # the same counter 5 s later
    assert signal.getsignal(signal.SIGINT) is not None  # the handler was put back


@pytest.mark.parametrize(("args", "message"), [
    (["--watch", "--interval", "0.5"], "--interval 0.5: must be at least 1 s"),
])
def test_bad_usage_exits_2(inventory: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["status", "-i", str(inventory), *args], env={"COLUMNS": "250"})
    assert result.exit_code == 2 and message in result.output


def test_without_a_plan_exits_2(inventory: Path) -> None:
    planfile.plan_path(inventory).unlink()
    result = runner.invoke(app, ["status", "-i", str(inventory)], env={"COLUMNS": "250"})
    assert result.exit_code == 2 and "no plan for" in result.output


def test_the_status_playbook_only_reads() -> None:
    text = (paths.playbooks_dir() / "status.yml").read_text()
    assert "tasks_from: status" in text
    for role in ("engine", "gateway"):
        tasks = (paths.roles_dir() / role / "tasks" / "status.yml").read_text()
        assert "changed_when: false" in tasks or "ansible.builtin.debug" in tasks
        for writer in ("ansible.builtin.template", "ansible.builtin.copy", "ansible.builtin.file", "state:"):
            assert writer not in tasks, (role, writer)
