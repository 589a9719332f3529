"""The one way the kit reads the cluster (enclave.runner.collect) and the reads built on it (enclave.runner.reads):
each host's result of the named tasks, parsed, and each read's error when the run fails. The playbook run is
replaced at its boundary (runner.collect.run_playbook) with recorded events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from enclave.contract import BUILD_TASK, FACTS_TASK, WEIGHTS_STATUS_TASK
from enclave.errors import RunError
from enclave.plan.gather import facts_result
from enclave.plan.inventory import Inventory, inventory_from_listing, ssh_targets
from enclave.runner import PlaybookRequest, RunProgress, RunResult, reads
from enclave.runner import collect as collect_mod
from enclave.runner.collect import collect, keep_results


def ok(host: str, task: str, res: dict[str, Any]) -> dict[str, Any]:
    return {"event": "runner_on_ok", "event_data": {"host": host, "task": task, "res": res}}


def failed(host: str, task: str, msg: str) -> dict[str, Any]:
    return {"event": "runner_on_failed", "event_data": {"host": host, "task": task, "res": {"msg": msg}}}


class Replay:
    """Stands in for run_playbook: feeds recorded events, records the request and the run options."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events, self.calls = events, []

    def __call__(self, request: PlaybookRequest, *, on_event: Any, **options: Any) -> RunResult:
        self.calls.append((request, options))
        progress = RunProgress()
        for event in self.events:
            progress.feed(event)
            on_event(event, progress)
        bad = bool(progress.failures)
        return RunResult(Path("/runs/20260101-facts-abc"), "failed" if bad else "successful", 2 if bad else 0,
                         progress, 1.0)


def replay(monkeypatch: pytest.MonkeyPatch, events: list[dict[str, Any]]) -> Replay:
    fake = Replay(events)
    monkeypatch.setattr(collect_mod, "run_playbook", fake)
    return fake


def test_keep_results_parses_only_the_named_tasks_of_successful_results() -> None:
    found: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    parsers = {"A": lambda res: res.get("v"), "B": lambda res: int(res["stdout"])}
    for event in [ok("h1", "A", {"v": 1}), ok("h2", "A", {}), ok("h1", "B", {"stdout": "x"}),
                  ok("h2", "B", {"stdout": "7"}), ok("h1", "C", {"v": 3}), failed("h3", "A", "boom"),
                  {"event": "runner_on_ok", "event_data": {"task": "A", "res": {"v": 9}}}]:
        keep_results(found, errors, parsers, event)
    # h2's A returned nothing (None keeps nothing); h1's B refused its answer (ValueError names why).
    assert found == {"A": {"h1": 1}, "B": {"h2": 7}}
    assert list(errors) == ["h1"] and "invalid literal" in errors["h1"]


def test_collect_passes_events_on_and_returns_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = replay(monkeypatch, [ok("h1", "A", {"v": 1})])
    seen = []
    run = collect(PlaybookRequest("x.yml", Path("inv")), {"A": lambda res: res["v"]},
                  on_event=lambda event, _progress: seen.append(event["event"]), keep=3)
    assert run.of("A") == {"h1": 1} and run.of("B") == {} and run.result.exit_code == 0
    assert seen == ["runner_on_ok"] and fake.calls[0][1]["keep"] == 3


def test_gather_keeps_each_hosts_facts(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = replay(monkeypatch, [ok("gpu01", FACTS_TASK, {"ansible_facts": {"enclave_host": {"gpus": []}}}),
                                ok("gpu02", FACTS_TASK, {"ansible_facts": {}})])
    assert reads.gather(Path("inv"), limit="gpu01") == {"gpu01": {"gpus": []}}
    assert fake.calls[0][0].playbook == "facts.yml" and fake.calls[0][0].limit == "gpu01"
    assert facts_result({}) is None


def test_gather_names_each_failing_host_and_task(monkeypatch: pytest.MonkeyPatch) -> None:
    replay(monkeypatch, [failed("gpu02", FACTS_TASK, "no python")])
    with pytest.raises(RunError, match=f"could not read facts from every host \\(gpu02: {FACTS_TASK}: no python\\); "
                                       "run 20260101-facts-abc"):
        reads.gather(Path("inv"))


def test_weights_states_keeps_status_reports_and_unreadable_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = replay(monkeypatch, [ok("gpu01", WEIGHTS_STATUS_TASK, {"stdout": json.dumps({"current": "a" * 40})}),
                                ok("gpu02", WEIGHTS_STATUS_TASK, {"stdout": "not json"}),
                                ok("gpu01", BUILD_TASK, {"msg": {"running": "0.33.0"}}),
                                ok("gpu02", BUILD_TASK, {"msg": "a string is no report"})])
    states, builds = reads.rollback_state(Path("inv"), ["gpu01", "gpu02"])
    assert states == {"gpu01": {"current": "a" * 40}, "gpu02": {"error": "unreadable status: not json"}}
    assert builds == {"gpu01": {"running": "0.33.0"}}
    request = fake.calls[0][0]
    assert (request.playbook, request.limit) == ("rollback-state.yml", "gpu01,gpu02")
    assert reads.weights_states(Path("inv"))[1] == {}  # no report task named: no reports
    assert fake.calls[1][0].playbook == "weights-status.yml"


def test_weights_states_says_what_it_could_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    replay(monkeypatch, [failed("gpu01", WEIGHTS_STATUS_TASK, "nodetool: not found")])
    with pytest.raises(RunError, match=r"could not read what the nodes ran before: gpu01: nodetool: not found"):
        reads.rollback_state(Path("inv"), ["gpu01"])


def test_an_inventory_listing_folds_children_and_gives_every_host_vars() -> None:
    listing = {"_meta": {"hostvars": {"gpu01": {"ansible_host": "10.0.0.1"}}},
               "all": {"children": ["enclave_nodes", "enclave_gateway", "ungrouped"]},
               "enclave_nodes": {"hosts": ["gpu01", "gpu02"]}, "enclave_gateway": {"hosts": ["gw01"]},
               "ungrouped": {}}
    inv = inventory_from_listing(Path("inv"), listing)
    assert inv.hosts("all") == ["gpu01", "gpu02", "gw01"] and inv.groups["all"] == ["gpu01", "gpu02", "gw01"]
    assert inv.hostvars["gpu02"] == {} and inv.hosts("enclave_nodes") == ["gpu01", "gpu02"]


def test_ssh_targets_are_the_enclave_hosts_reached_over_ssh() -> None:
    inv = Inventory(Path("inv"), {"enclave_nodes": ["gpu01", "gpu02", "gpu03"], "enclave_gateway": ["gw01"],
                                  "other": ["x"]},
                    {"gpu01": {"ansible_host": "10.0.0.1", "ansible_port": "2222"},
                     "gpu02": {"ansible_connection": "local"}, "gpu03": {"ansible_host": "{{ lookup }}"},
                     "gw01": {}, "x": {}})
    assert ssh_targets(inv) == [("gpu01", "10.0.0.1", 2222), ("gw01", "gw01", 22)]
