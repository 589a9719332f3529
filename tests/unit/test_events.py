"""RunProgress fed with events recorded from real runs against sandbox hosts (tests/unit/fixtures/events)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enclave.runner.events import HostTally, RunProgress, diff_text, failure_message

FIXTURES = Path(__file__).parent / "fixtures" / "events"


def replay(name: str) -> tuple[RunProgress, list[dict]]:
    events = [json.loads(line) for line in (FIXTURES / f"{name}.jsonl").read_text().splitlines()]
    progress = RunProgress()
    for event in events:
        progress.feed(event)
    return progress, events


def test_converging_run_counts_changes_per_host_and_ends_ok() -> None:
    progress, events = replay("converge_with_changes")
    assert progress.finished
    assert progress.ok
    assert set(progress.hosts) == {"gateway", "node1", "node2"}
    assert all(t.changed == 1 for t in progress.hosts.values())
    assert progress.changed_total == 3
    assert progress.failures == []
    assert progress.play == "Provision the base OS of every enclave host"
    starts = sum(e["event"] in ("playbook_on_task_start", "playbook_on_handler_task_start") for e in events)
    assert progress.tasks_started == starts > 10


def test_failed_task_is_reported_with_host_task_and_module_message() -> None:
    progress, _ = replay("package_missing")
    assert not progress.ok
    assert progress.hosts["node1"].failed == 1
    [failure] = progress.failures
    assert failure.host == "node1"
    assert failure.task == "Install the base packages"
    assert "enclave-no-such-package" in failure.message
    assert not failure.unreachable


def test_unreachable_host_is_a_failure_and_others_stay_ok() -> None:
    progress, _ = replay("unreachable_host")
    assert not progress.ok
    assert progress.hosts["ghost"].unreachable == 1
    assert not progress.hosts["node1"].bad
    [failure] = progress.failures
    assert failure.unreachable and failure.host == "ghost"
    assert "No route to host" in failure.message


def test_final_stats_replace_the_running_tally() -> None:
    progress = RunProgress()
    progress.feed({"event": "runner_on_ok", "event_data": {"host": "a", "res": {"changed": True}}})
    progress.feed({"event": "playbook_on_stats", "event_data": {
        "ok": {"a": 5}, "changed": {"a": 2}, "failures": {}, "dark": {}, "skipped": {"a": 1},
        "processed": {"a": 1}, "rescued": {"a": 1}, "ignored": {}}})
    assert progress.hosts["a"] == HostTally(ok=5, changed=2, skipped=1, rescued=1)


def test_ignored_failure_is_not_a_failure() -> None:
    progress = RunProgress()
    progress.feed({"event": "runner_on_failed", "event_data": {"host": "a", "task": "t", "ignore_errors": True,
                                                               "res": {"msg": "meh"}}})
    assert progress.ok and progress.failures == [] and progress.hosts["a"].ignored == 1


@pytest.mark.parametrize(("res", "expected"), [
    ({"msg": "boom"}, "boom"),
    ({"msg": "non-zero return code", "stderr": "a\nb\nc\nd", "rc": 2}, "non-zero return code; b | c | d"),
    ({"rc": 3}, "exit code 3"),
    ({"censored": "the output has been hidden due to the fact that 'no_log: true' was specified"},
     "the output has been hidden due to the fact that 'no_log: true' was specified"),
    ({"msg": "One or more items failed", "results": [
        {"item": {"path": "/srv/x"}, "failed": True, "msg": "denied"}, {"item": "ok", "failed": False}]},
     "One or more items failed; [/srv/x] denied"),
    ({}, "failed without a message"),
])
def test_failure_message(res: dict, expected: str) -> None:
    assert failure_message(res) == expected


def test_failure_message_is_bounded() -> None:
    assert len(failure_message({"msg": "x" * 5000})) <= 800


def test_a_long_message_keeps_what_failed_and_the_cause_at_its_end() -> None:
    """An engine that cannot start: the role's message ends with vLLM's journal, whose last entry is the cause,
    itself one line of thousands of characters (every architecture vLLM knows), the traceback before it escaped."""
    supported = ", ".join(f"'Arch{i}ForCausalLM'" for i in range(400))
    msg = ("node1: the engine (replica-1, rank 0) is not ready:\nthe engine exited while starting "
           "(enclave-engine.service activating/auto-restart, result exit-code) (waited up to 600 s for\n"
           "http://10.0.0.11:8000/health). Last lines of `journalctl -u enclave-engine.service`:\n"
           + "\\n".join(f'  File "/opt/x/mod{i}.py", line {i}, in f{i}' for i in range(30))
           + "\\npydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig\\n"
           f"  Value error, Model architectures ['EnclaveNoSuchModelForCausalLM'] are not supported for now. "
           f"Supported architectures: dict_keys([{supported}])\\n    For further information visit https://x/y")
    shown = failure_message({"msg": msg})
    assert len(shown) <= 800
    assert shown.startswith("node1: the engine (replica-1, rank 0) is not ready:\nthe engine exited while starting")
    assert "['EnclaveNoSuchModelForCausalLM'] are not supported" in shown
    assert shown.rstrip().endswith("For further information visit https://x/y")
    assert "\n...\n" in shown  # the middle of the traceback went, and says so


def test_diff_text_from_before_and_after() -> None:
    res = {"diff": [{"before": "a\nb\n", "after": "a\nc\n", "before_header": "/etc/x", "after_header": "new"}]}
    text = diff_text(res)
    assert "--- /etc/x" in text and "-b" in text.splitlines() and "+c" in text.splitlines()


def test_diff_text_prepared_and_loop_items_and_nothing() -> None:
    assert diff_text({"diff": {"prepared": "+ added line\n"}}) == "+ added line"
    looped = {"results": [{"diff": [{"before": "1\n", "after": "2\n"}]}, {"diff": []}]}
    assert "+2" in diff_text(looped).splitlines()
    assert diff_text({"diff": [{"before": "same", "after": "same"}]}) == ""
    assert diff_text({}) == ""


def test_new_failure_is_set_only_by_the_event_that_adds_it() -> None:
    progress = RunProgress()
    progress.feed({"event": "runner_on_failed", "event_data": {"host": "a", "task": "t", "res": {"msg": "x"}}})
    assert progress.new_failure is not None and progress.new_failure.host == "a"
    progress.feed({"event": "runner_on_ok", "event_data": {"host": "b", "res": {}}})
    assert progress.new_failure is None
    snap = progress.snapshot()
    progress.feed({"event": "runner_on_ok", "event_data": {"host": "a", "res": {"changed": True}}})
    assert snap.hosts["a"].changed == 0 and progress.hosts["a"].changed == 1


def test_a_message_that_names_its_host_is_not_prefixed_twice() -> None:
    progress = RunProgress()
    res = {"msg": "node1: the engine (replica-1, rank 0) is not ready: the engine exited while starting"}
    progress.feed({"event": "runner_on_failed", "event_data": {"host": "node1", "task": "t", "play": "p", "res": res}})
    progress.feed({"event": "runner_on_failed", "event_data": {"host": "node2", "task": "t", "play": "p",
                                                                "res": {"msg": "node1: is the head of node2"}}})
    assert [(f.host, f.message) for f in progress.failures] == [
        ("node1", "the engine (replica-1, rank 0) is not ready: the engine exited while starting"),
        ("node2", "node1: is the head of node2"),
    ]
