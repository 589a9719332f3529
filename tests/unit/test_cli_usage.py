"""`enclave usage`: the window rule it shares with `enclave audit`, the gateways' sums checked and combined, the
CLI (table, --json, --client, bad input) with the playbook run replaced at the driver boundary, and the gateway
role's `usage` entry point run by Ansible on this machine over a log in nginx's format."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from enclave import paths
from enclave.cli import app, common
from enclave.contract import USAGE_TASK
from enclave.gateway import usage
from enclave.runner import collect as runner_collect
from enclave.runner.inventory import validate
from enclave.timewindow import parse_since
from tests.unit.role_render import run_play
from tests.unit.test_cli_status import FakeRuns, ok
from tests.unit.test_gateway_accesslog import line

runner = CliRunner()
NOW = dt.datetime(2026, 12, 5, 8, 0, tzinfo=dt.UTC)


def sums(**clients: dict[str, tuple[int, int, int]]) -> dict[str, Any]:
    return {"msg": {"clients": {c: {m: dict(zip(usage.COUNTS, v, strict=True)) for m, v in models.items()}
                                for c, models in clients.items()}, "records": 1, "first": 0, "last": 0}}


@pytest.fixture
def inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_state: Path) -> Path:
    copy = tmp_path / "h200-cluster"
    shutil.copytree(paths.share_dir() / "inventory" / "h200-cluster", copy)
    monkeypatch.setattr(common, "validate", lambda path, **kw: validate(path, reachable=False, **kw))
    return copy


def test_the_window_rule_is_the_audit_verbs() -> None:
    assert parse_since("90m", NOW) == NOW - dt.timedelta(minutes=90)
    assert parse_since("7d", NOW) == NOW - dt.timedelta(days=7)
    assert parse_since("2026-12-04T18:00", NOW) == dt.datetime(2026, 12, 4, 18, 0, tzinfo=dt.UTC)
    from enclave.cli import audit as audit_cli
    assert audit_cli.parse_since is parse_since


def test_sums_add_up_over_gateways_and_models() -> None:
    per_gateway = {"gw1": sums(a={"m1": (2, 10, 5), "m2": (1, 1, 1)}, b={"m1": (1, 3, 0)})["msg"]["clients"],
                   "gw2": sums(a={"m1": (1, 100, 50)}, **{"": {"": (4, 0, 0)}})["msg"]["clients"]}
    rows = usage.combine(per_gateway)
    assert [(r.client, r.requests, r.prompt_tokens, r.completion_tokens, r.total_tokens) for r in rows] == [
        ("", 4, 0, 0, 0), ("a", 4, 111, 56, 167), ("b", 1, 3, 0, 3)]
    assert rows[1].models == {"m1": {"requests": 3, "prompt_tokens": 110, "completion_tokens": 55},
                              "m2": {"requests": 1, "prompt_tokens": 1, "completion_tokens": 1}}
    assert [r.client for r in usage.combine(per_gateway, "b")] == ["b"]


@pytest.mark.parametrize("msg", [None, "text", {"clients": []}, {"clients": {"a": []}},
                                 {"clients": {"a": {"m": {"requests": 1, "prompt_tokens": -1,
                                                          "completion_tokens": 0}}}},
                                 {"clients": {"a": {"m": {"requests": "1", "prompt_tokens": 1,
                                                          "completion_tokens": 0}}}}])
def test_an_unreadable_answer_is_refused(msg: Any) -> None:
    with pytest.raises(ValueError, match="unreadable usage"):
        usage.gateway_sums({"msg": msg})


def test_the_request_carries_the_window_as_unix_time(tmp_path: Path) -> None:
    request = usage.usage_request(tmp_path, NOW)
    assert request.playbook == "usage.yml" and request.extra_vars == {"gateway_usage_since": int(NOW.timestamp())}


def test_table_and_json(inventory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRuns([[ok("gw01", USAGE_TASK, sums(**{"team-a": {"org/tiny": (3, 120, 45)},
                                                    "batch": {"org/tiny": (1, 7, 0)}}))]])
    monkeypatch.setattr(runner_collect, "run_playbook", fake)
    result = runner.invoke(app, ["usage", "-i", str(inventory), "--since", "12h"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "team-a" in result.output and "165" in result.output and "batch" in result.output
    since = fake.requests[0].extra_vars["gateway_usage_since"]
    assert abs(since - (dt.datetime.now(dt.UTC) - dt.timedelta(hours=12)).timestamp()) < 60
    result = runner.invoke(app, ["usage", "-i", str(inventory), "--json", "--client", "team-a"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [(c["client"], c["requests"], c["prompt_tokens"], c["completion_tokens"], c["total_tokens"])
            for c in data["clients"]] == [("team-a", 3, 120, 45, 165)]


@pytest.mark.parametrize(("args", "message"), [(["--since", "yesterday"], "--since 'yesterday'"),
                                               (["--client", ""], "--client ''"),
                                               (["--client", "team a"], "is not a client name")])
def test_bad_usage_exits_2_before_any_run(inventory: Path, monkeypatch: pytest.MonkeyPatch, args: list[str],
                                          message: str) -> None:
    fake = FakeRuns([[]])
    monkeypatch.setattr(runner_collect, "run_playbook", fake)
    result = runner.invoke(app, ["usage", "-i", str(inventory), *args], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert fake.requests == []


def test_a_gateway_that_does_not_answer_fails_the_read(inventory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    failed = {"event": "runner_on_failed", "event_data": {"host": "gw01", "task": "Sum the access log's requests "
              "and tokens per client and model", "res": {"msg": "no such file"}}}
    monkeypatch.setattr(runner_collect, "run_playbook", FakeRuns([[failed]]))
    result = runner.invoke(app, ["usage", "-i", str(inventory)], env={"COLUMNS": "200"})
    assert result.exit_code == 1 and "could not read the gateways' usage" in result.output


def test_the_role_entry_point_sums_the_log_on_the_gateway(tmp_path: Path) -> None:
    log = tmp_path / "enclave-access.log"
    log.write_text(line("a", 10, 5, time="2026-12-01T00:00:00+00:00") + line("a", 3, 4) + line("b", 1, 0))
    since = int(dt.datetime(2026, 12, 2, tzinfo=dt.UTC).timestamp())
    report = {"name": "Keep the report", "ansible.builtin.copy": {
        "content": "{{ gateway_usage.stdout }}", "dest": str(tmp_path / "report.json"), "mode": "0600"}}
    (tmp_path / "play").mkdir()
    proc = run_play(tmp_path / "play", roles=["gateway"], groups={"enclave_gateway": {"gw": {}}},
                    extra={"gateway_access_log": str(log), "gateway_usage_since": since,
                           "ansible_python_interpreter": "/usr/bin/python3"},
                    task_files=("gateway/tasks/usage.yml",), tasks=[report])
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert USAGE_TASK in proc.stdout
    assert json.loads((tmp_path / "report.json").read_text())["clients"] == {
        "a": {"org/tiny": {"requests": 1, "prompt_tokens": 3, "completion_tokens": 4}},
        "b": {"org/tiny": {"requests": 1, "prompt_tokens": 1, "completion_tokens": 0}}}
