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
from enclave.cli import app, common
from enclave.cli import status as status_cli
from enclave.contract import GATEWAY_STATUS_TASK as GATEWAY_TASK
from enclave.contract import NODE_STATUS_TASK as NODE_TASK
from enclave.plan import planfile
from enclave.runner import PlaybookRequest, RunProgress, RunResult
from enclave.runner import collect as runner_collect
from enclave.runner.inventory import validate
from enclave.status import collect
from enclave.status.history import History, Trend
from tests.unit.local_prometheus import running_engines, running_prometheus, wait_for
from tests.unit.standin_http import free_port

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
    monkeypatch.setattr(common, "validate", lambda path, **kw: validate(path, reachable=False, **kw))
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
    (["--history-minutes", "0"], "--history-minutes 0: must be 1 to 1440"),
    (["--history-minutes", "1441"], "--history-minutes 1441: must be 1 to 1440"),
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


def monitored_by(inventory: Path, port: int) -> None:
    """The plan names gw01 as the monitoring host, and the inventory puts gw01 on loopback with Prometheus on
    `port` (the private network widened to loopback for it), so status reaches a Prometheus this test runs."""
    planfile.write(inventory, {**PLAN, "monitoring": {"host": "gw01"}})
    (inventory / "host_vars").mkdir(exist_ok=True)
    (inventory / "host_vars" / "gw01.yml").write_text(
        f"ansible_host: 127.0.0.1\nenclave_private_network: 127.0.0.0/8\nmonitoring_prometheus_port: {port}\n")


def test_history_from_prometheus_shows_per_replica_in_the_table_and_the_json(
        inventory: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(runner_collect, "run_playbook", FakeRuns([healthy_round(), healthy_round()]))
    with running_engines("gpu01", "gpu02") as engines, running_prometheus(engines, tmp_path) as base:
        monitored_by(inventory, int(base.rsplit(":", 1)[1]))

        def rated() -> bool:
            out = runner.invoke(app, ["status", "-i", str(inventory), "--json"]).output
            replicas = (json.loads(out).get("history") or {}).get("replicas") or {}
            return len(replicas) == 2 and all(r["tokens_per_s"]["now"] for r in replicas.values())

        assert wait_for(rated, 60), "Prometheus never had a rate for both replicas"
        result = runner.invoke(app, ["status", "-i", str(inventory), "--json"])
        table = runner.invoke(app, ["status", "-i", str(inventory)], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["history_unavailable"] is None
    history = data["history"]
    assert history["source"] == base and history["minutes"] == 10 and history["step_s"] == 30
    gpu01, gpu02 = history["replicas"]["gpu01"], history["replicas"]["gpu02"]
    assert (gpu01["replica"], gpu02["replica"]) == ("replica-1", "replica-2")
    assert gpu01["requests"]["now"] == 5.0 and gpu02["requests"]["now"] == 1.0
    # rate() over status's 60 s window divides by the whole window while Prometheus holds only seconds of data,
    # so here it is below the engine's 100 tokens/s (test_status_history checks the value with a short window)
    assert 0 < gpu02["tokens_per_s"]["now"] < gpu01["tokens_per_s"]["now"] <= 130
    assert gpu01["requests"]["samples"][-1] == [history["end"], 5.0]
    assert table.exit_code == 0, table.output
    assert f"history: last 10 min from Prometheus at {base}, one point per 30 s" in table.output
    assert "tokens/s, last 10 min" in table.output and "requests, last 10 min" in table.output
    assert "█ now 5 avg 5 max 5" in table.output and "█ now 1 avg 1 max 1" in table.output
    assert "3 running, 1 waiting" in table.output  # the direct read is still there


def test_with_prometheus_unreachable_status_shows_the_direct_read_and_why(
        inventory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_collect, "run_playbook", FakeRuns([healthy_round(), healthy_round()]))
    port = free_port()  # closed: nothing listens there
    monitored_by(inventory, port)
    result = runner.invoke(app, ["status", "-i", str(inventory)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert f"history: none: Prometheus unreachable at http://127.0.0.1:{port}: " in result.output
    assert "Connection refused" in result.output and "last 10 min" not in result.output
    assert "3 running, 1 waiting" in result.output and "serving: 2 of 2 replicas" in result.output
    data = json.loads(runner.invoke(app, ["status", "-i", str(inventory), "--json"]).output)
    assert data["history"] is None and "Prometheus unreachable" in data["history_unavailable"]
    assert data["nodes"]["gpu01"]["running"] == 3.0


@pytest.mark.parametrize(("args", "monitored", "reason"), [
    ([], False, "monitoring is not deployed (the plan names no monitoring host)"),
    (["--no-history"], True, "turned off (--no-history)"),
])
def test_without_history_the_reason_is_one_line(inventory: Path, monkeypatch: pytest.MonkeyPatch,
                                                args: list[str], monitored: bool, reason: str) -> None:
    monkeypatch.setattr(runner_collect, "run_playbook", FakeRuns([healthy_round()]))
    if monitored:
        monitored_by(inventory, free_port())
    result = runner.invoke(app, ["status", "-i", str(inventory), *args], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert f"history: none: {reason}" in result.output


def test_the_sparkline_scales_to_the_maximum_and_leaves_gaps_blank() -> None:
    history = History("http://10.40.0.10:9090", 2, 30, 1000.0, 1120.0)
    trend = Trend([(1000.0, 0.0), (1030.0, 5.0), (1060.0, 10.0), (1120.0, 2.5)], 2.5)
    assert status_cli.sparkline(trend, history) == "▁▅█ ▃"
    assert status_cli.trend_cell(trend, history, "{:.1f}") == "▁▅█ ▃ now 2.5 avg 4.4 max 10.0"
    assert status_cli.trend_cell(Trend([], None), history, "{:.1f}") == "no data"
    idle = Trend([(1000.0, 0.0), (1030.0, 0.0)], None)
    assert status_cli.trend_cell(idle, history, "{:.0f}") == "▁▁    now ? avg 0 max 0"
