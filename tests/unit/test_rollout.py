"""The decisions of `enclave update` / `enclave rollback` (enclave.rollout), without a host or the CLI: the checked
options, the run request, and where a rollback goes back to from what the nodes report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from enclave.engine.build import VLLM_VERSION
from enclave.errors import UsageError
from enclave.rollout import (
    multi_node_replicas,
    parse_max_fail,
    parse_serial,
    parse_vllm_version,
    roll_request,
    rollback_target,
)

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"
OLD, NEW = "a" * 40, "b" * 40
PLAN = {"version": 1, "repo": "deepseek-ai/DeepSeek-V4-Flash", "revision": OLD, "port": 8000,
        "replicas": [{"name": "replica-1", "hosts": ["gpu01"]}, {"name": "replica-2", "hosts": ["gpu02"]}]}


def test_multi_node_replicas_are_named_with_their_hosts() -> None:
    plan = {"replicas": [{"name": "replica-1", "hosts": ["gpu01"]}, {"name": "replica-2", "hosts": ["gpu02", "gpu03"]},
                         {"hosts": ["gpu04", "gpu05"]}, {"name": "empty"}]}
    assert multi_node_replicas(plan) == ["replica-2 (gpu02, gpu03)", "? (gpu04, gpu05)"]
    assert multi_node_replicas(PLAN) == [] and multi_node_replicas({}) == []


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
